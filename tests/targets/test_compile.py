import json

import pytest
import torch
from click.testing import CliRunner

import jetvit_compile as jc
from jetvit_compile.cli import main
from jetvit_compile.errors import UsageError
from jetvit_compile.targets import TARGETS, CompileSettings, trt_compile_kwargs
from tiny_vit import tiny_program


@pytest.fixture(scope="module")
def program():
    return tiny_program(64)


def test_auto_picks_a_working_target_and_matches_the_rewritten_graph(program, tmp_path):
    result = jc.compile(program, "window:4", output=tmp_path / "out")
    assert result.target in ("onnxruntime", "torch_compile", "torch")
    skipped = dict(result.skipped)
    assert "tensorrt" in skipped and skipped["tensorrt"], "every skipped target says why"
    assert result.max_abs_error <= 1e-3
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["target"] == result.target and manifest["layout"] == "window:4"
    assert manifest["passes"] == {"to_window": 1, "to_linear": 0}
    assert all((tmp_path / "out" / f).is_file() for f in manifest["files"])
    assert "torch" in manifest["versions"] and manifest["device"]


@pytest.mark.parametrize("target", ["onnxruntime", "torch"])
def test_named_cpu_targets_compile_save_and_agree(program, target, tmp_path):
    x = torch.randn(1, 3, 64, 64)
    result = jc.compile(program, "linear:relu", target=target, inputs=(x,), output=tmp_path)
    rewritten, _ = jc.rewrite(program, "linear:relu")
    assert torch.allclose(result.compiled(x), rewritten.module()(x), atol=1e-4)
    assert result.compiled.benchmark(x, repeat=2).runs == 2


def test_onnxruntime_artifact_runs_on_its_own(program, tmp_path):
    import onnxruntime as ort

    x = torch.randn(1, 3, 64, 64)
    jc.compile(program, "window:4", target="onnxruntime", inputs=(x,), output=tmp_path)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(out), jc.rewrite(program, "window:4")[0].module()(x), atol=1e-4)


def test_unknown_target_is_a_usage_error(program):
    with pytest.raises(UsageError, match="unknown target 'tpu'"):
        jc.compile(program, "full", target="tpu")


def test_tensorrt_settings_map_to_current_torch_tensorrt_names():
    s = CompileSettings(min_block_size=3, workspace_size=123, timing_cache_path="/tmp/tc.bin", optimization_level=4)
    fp32 = trt_compile_kwargs(s, (torch.zeros(1, 3, 8, 8),))
    assert fp32["min_block_size"] == 3 and fp32["workspace_size"] == 123
    assert fp32["timing_cache_path"] == "/tmp/tc.bin" and fp32["optimization_level"] == 4
    assert fp32["use_explicit_typing"] is True and fp32["use_fp32_acc"] is False
    half = trt_compile_kwargs(CompileSettings(), (torch.zeros(1, 3, 8, 8, dtype=torch.float16),))
    assert half["use_fp32_acc"] is True, "attention accumulates in fp32 by default for half models"
    assert "timing_cache_path" not in half and "optimization_level" not in half
    assert trt_compile_kwargs(CompileSettings(attention_in_fp32=False), (torch.zeros(1, dtype=torch.float16),))[
        "use_fp32_acc"] is False


def test_every_target_reports_availability_with_a_reason():
    for name, target in TARGETS.items():
        ok, why = target.available()
        assert isinstance(ok, bool) and why, name


def test_tensorrt_end_to_end_where_it_imports(program, tmp_path):
    ok, why = TARGETS["tensorrt"].available()
    if not ok:
        pytest.skip(why)
    result = jc.compile(program, "window:4", target="tensorrt", output=tmp_path)
    assert result.max_abs_error <= 1e-3 and (tmp_path / "model.ep").is_file()


def test_cli_compile_writes_artifact_and_manifest(program, tmp_path):
    src = tmp_path / "tiny.pt2"
    torch.export.save(program, str(src))
    out = tmp_path / "built"
    r = CliRunner().invoke(main, ["compile", str(src), "--layout", "window:4", "--target", "torch", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "compiled with torch" in r.output and (out / "model.pt2").is_file()
    again = torch.export.load(str(out / "model.pt2"))
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(again.module()(x), jc.rewrite(program, "window:4")[0].module()(x), atol=1e-5)


def test_cli_compile_refuses_other_files_and_bad_targets(program, tmp_path):
    src = tmp_path / "tiny.pt2"
    torch.export.save(program, str(src))
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "m.bin"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "takes a torch.export program saved as .pt2 or an .onnx file" in r.output
    r = CliRunner().invoke(main, ["compile", str(src), "--target", "tpu", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown target" in r.output and "Traceback" not in r.output


def test_tvm_target_builds_runs_and_saves_a_library(program, tmp_path):
    ok, why = TARGETS["tvm"].available()
    if not ok:
        pytest.skip(why)
    x = torch.randn(1, 3, 64, 64)
    result = jc.compile(program, "window:4", target="tvm", inputs=(x,), output=tmp_path)
    assert result.target == "tvm" and result.max_abs_error <= 1e-4
    assert torch.allclose(result.compiled(x), jc.rewrite(program, "window:4")[0].module()(x), atol=1e-4)
    assert (tmp_path / "model.so").stat().st_size > 0


def test_auto_does_not_pick_untuned_tvm(program):
    result = jc.compile(program, "full")
    assert result.target != "tvm"
    assert "tvm" in dict(result.skipped)


def test_cli_compile_never_overwrites_its_input(program, tmp_path):
    src = tmp_path / "model.pt2"
    torch.export.save(program, str(src))
    before = src.read_bytes()
    r = CliRunner().invoke(main, ["compile", str(src), "--target", "torch", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "would overwrite the input" in r.output
    assert src.read_bytes() == before
