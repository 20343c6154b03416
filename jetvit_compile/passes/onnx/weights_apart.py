"""Serializing a model with its large initializers left out of the bytes, to be handed to ONNX Runtime as
arrays (``SessionOptions.add_external_initializers``).

The search builds one ONNX Runtime session per layout it scores, and every layout shares the original's
weights. Written into each model's bytes, they are copied, encoded and parsed again for every session (at a
ViT-S's 88 MB, most of an evaluation's time at small inputs); left apart, the bytes hold the graph and the
small tensors only, and each session reads the same arrays. The session computes what it computes from the
whole bytes: same graph, same values.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ._graph_facts import names_read

MIN_BYTES = 4096  # smaller tensors stay in the bytes: handing them over costs more than it saves
_PLACEHOLDER = "jetvit-weights-apart"  # the location every left-out tensor names; never read as a file


def _as_array(tensor: ir.TensorProtocol) -> np.ndarray | None:
    """The tensor as a plain numpy array ONNX Runtime takes, or None (bfloat16, float8, strings stay inline)."""
    if isinstance(tensor, ir.ExternalTensor) or tensor.nbytes < MIN_BYTES:
        return None
    array = tensor.numpy()
    return np.ascontiguousarray(array) if array.dtype.kind in "fiub" else None


def serialize_weights_apart(model: ir.Model) -> tuple[bytes, dict[str, np.ndarray]]:
    """``model``'s bytes with the main graph's large initializers declared but left out, and those
    initializers by name. ``model`` is left as it was."""
    weights: dict[str, np.ndarray] = {}
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
    # ONNX Runtime drops initializers nothing reads before it takes the ones handed over: those stay inline
    read = names_read(model.graph)
    try:
        for name, value in model.graph.initializers.items():
            tensor = value.const_value
            array = None if tensor is None or name not in read else _as_array(tensor)
            if array is None:
                continue
            weights[name] = array
            swapped.append((value, tensor))
            value.const_value = ir.ExternalTensor(_PLACEHOLDER, offset=0, length=tensor.nbytes, dtype=tensor.dtype,
                                                  shape=tensor.shape, name=name)
        blob = ir.serde.serialize_model(model).SerializeToString()
    finally:
        for value, tensor in swapped:
            value.const_value = tensor
    return blob, weights
