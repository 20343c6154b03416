"""Read intermediate values of an ONNX model: one ONNX Runtime session with them exposed as extra outputs
(the model itself is left as it was)."""
from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from ..._onnxruntime import cpu_session


def probe_session(model: ir.Model, values: Sequence[ir.Value], needed_for: str):
    """A CPU session of ``model`` whose outputs include ``values`` (run it with their names as fetches)."""
    extra = [v for v in dict.fromkeys(values) if v not in model.graph.outputs]
    model.graph.outputs.extend(extra)
    try:
        blob = ir.serde.serialize_model(model).SerializeToString()
    finally:
        for v in extra:
            model.graph.outputs.remove(v)
    return cpu_session(blob, needed_for)
