"""One output rule: no command writes over any of its inputs, however the path is spelled; the output's
suffix says what is written; no temp file outlives a failed or killed save."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from jetvit_compile._files import atomic_write, check_output_path
from jetvit_compile.cli import main
from jetvit_compile.errors import UsageError

from cli_errors import error_line
from models import tiny_vit_file


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _photos(tmp_path, n=4):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (48, 48), (60 * i, 90, 200)).save(folder / f"p{i}.png")
    return folder


def _unchanged(path: Path, before: bytes):
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if ".tmp." in p.name]


def test_rewrite_over_a_hard_link_of_the_model_is_refused(tmp_path):
    model = tiny_vit_file(tmp_path)
    link = tmp_path / "link.onnx"
    os.link(model, link)
    before = model.read_bytes()
    line = error_line(_cli("rewrite", model, "--layout", "window:2", "-o", link), 2)
    assert "is the input" in line
    _unchanged(model, before)


@pytest.mark.parametrize("spelling", ["relative", "dotdot", "symlink"])
def test_rewrite_over_the_model_by_any_spelling_is_refused(tmp_path, monkeypatch, spelling):
    model = tiny_vit_file(tmp_path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    out = {"relative": "../tiny.onnx", "dotdot": str(tmp_path / "sub" / ".." / "tiny.onnx"),
           "symlink": "alias.onnx"}[spelling]
    if spelling == "symlink":
        os.symlink(model, "alias.onnx")
    before = model.read_bytes()
    error_line(_cli("rewrite", model, "--layout", "window:2", "-o", out), 2)
    _unchanged(model, before)


def test_rewrite_over_its_layout_parameters_is_refused(tmp_path):
    model = tiny_vit_file(tmp_path)
    layout = tmp_path / "l.json"
    layout.write_text('{"schema": "jetvit-layout"}')
    link = tmp_path / "l.onnx"
    os.link(layout, link)  # the layout file under an .onnx name
    error_line(_cli("rewrite", model, "--layout", layout, "-o", link), 2)


def test_search_output_and_report_inside_the_photo_folder_are_refused(tmp_path):
    model, photos = tiny_vit_file(tmp_path), _photos(tmp_path)
    names = sorted(p.name for p in photos.iterdir())
    assert "inside the input folder" in error_line(
        _cli("search", model, "--calib", photos, "--min-fidelity", "0.9", "-o", photos / "layout.json"), 2)
    assert "photos" in error_line(_cli("search", model, "--calib", photos, "--min-fidelity", "0.9",
                                       "-o", tmp_path / "l.json", "--report", photos), 2)
    assert sorted(p.name for p in photos.iterdir()) == names


def test_search_over_a_hard_linked_profile_is_refused(tmp_path):
    model, photos = tiny_vit_file(tmp_path), _photos(tmp_path)
    profile = tmp_path / "p.json"
    profile.write_text("{}")
    os.link(profile, tmp_path / "same.json")
    error_line(_cli("search", model, "--calib", photos, "--min-fidelity", "0.9", "--profile", profile,
                    "-o", tmp_path / "same.json"), 2)
    assert profile.read_text() == "{}"


def test_profile_output_must_be_json(tmp_path):
    model = tiny_vit_file(tmp_path)
    assert ".json" in error_line(_cli("profile", model, "-o", tmp_path / "p.txt"), 2)
    assert not (tmp_path / "p.txt").exists()


def test_distill_over_a_hard_link_of_the_layout_is_refused(tmp_path):
    model, photos = tiny_vit_file(tmp_path), _photos(tmp_path)
    layout = tmp_path / "l.json"
    layout.write_text('{"schema": "jetvit-layout"}')
    os.link(layout, tmp_path / "again.json")
    error_line(_cli("distill", model, "--layout", layout, "--calib", photos, "-o", tmp_path / "again.json"), 2)
    assert layout.read_text() == '{"schema": "jetvit-layout"}'


def test_compile_into_the_tuning_database_or_photos_is_refused(tmp_path):
    model = tiny_vit_file(tmp_path)
    db = tmp_path / "db"
    db.mkdir()
    error_line(_cli("compile", model, "--target", "onnxruntime", "--tvm-database", db, "-o", db), 2)
    error_line(_cli("compile", model, "--target", "onnxruntime", "--tvm-database", db, "-o", db / "out"), 2)


def test_demo_output_into_the_photos_is_refused(tmp_path):
    photos = _photos(tmp_path)
    error_line(_cli("demo", "--calib", photos, "-o", photos), 2)
    assert not (photos / "layout.json").exists()


def test_an_output_that_is_a_device_or_folder_is_refused(tmp_path):
    with pytest.raises(UsageError, match="not a regular file"):
        check_output_path("/dev/full")
    with pytest.raises(UsageError, match="not a regular file"):
        check_output_path(tmp_path)


def test_a_failed_write_is_one_line_with_the_path_and_no_temp_file(tmp_path, monkeypatch):
    import onnx_ir

    model = tiny_vit_file(tmp_path)

    def full_disk(_model, path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(onnx_ir, "save", full_disk)
    line = error_line(_cli("rewrite", model, "--layout", "window:2", "--no-verify", "-o", tmp_path / "out.onnx"), 4)
    assert "No space left on device" in line and "out.onnx" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]


def test_atomic_write_removes_its_temp_file_on_keyboard_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "x.json") as tmp:
            Path(tmp).write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_a_rewrite_save_leaves_no_temp_file(tmp_path):
    """The real CLI in a subprocess, SIGTERM'd while it writes (the test wraps onnx_ir.save to signal itself
    half way: deterministic, and nothing of it is in the package)."""
    model = tiny_vit_file(tmp_path)
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        from pathlib import Path
        import onnx_ir
        def save(model, path, *args, **kwargs):
            Path(path).write_bytes(b"half a model")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        onnx_ir.save = save
        from jetvit_compile.cli import main
        main(["rewrite", {str(model)!r}, "--layout", "window:2", "--no-verify", "-o", {str(tmp_path / 'out.onnx')!r}])
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 143, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: terminated"), run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]
