"""Photo folders: every photo decoded up front; a truncated photo or one smaller than 32 px is refused by
name; files that are not images are named in a note; 16-bit PNGs are scaled, not clipped; a short folder
is said."""
from __future__ import annotations

import io

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from jetvit_compile import calibration
from jetvit_compile.cli import main
from jetvit_compile.errors import UsageError
from jetvit_compile.images import IMAGENET_MEAN, IMAGENET_STD, images_in, load_image

from cli_errors import error_line
from models import tiny_vit_file


def _photo(path, size=(64, 48), colour=(200, 30, 90)):
    Image.new("RGB", size, colour).save(path)
    return path


def _folder(tmp_path, n=4):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(n):
        _photo(folder / f"p{i}.png", colour=(40 * i, 100, 200))
    return folder


def _truncated_jpeg(path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def test_truncated_jpeg_is_refused_by_name(tmp_path):
    folder = _folder(tmp_path)
    _truncated_jpeg(folder / "cut.jpg")
    with pytest.raises(UsageError, match="cut.jpg") as info:
        images_in(folder)
    assert "truncated" in str(info.value)


def test_cli_truncated_jpeg_in_the_calibration_folder_is_one_line(tmp_path):
    folder = _folder(tmp_path)
    _truncated_jpeg(folder / "cut.jpg")
    model = tiny_vit_file(tmp_path)
    result = CliRunner().invoke(main, ["search", str(model), "--calib", str(folder), "--min-fidelity", "0.9",
                                       "-o", str(tmp_path / "layout.json")])
    assert "cut.jpg" in error_line(result, 2)


def test_tiny_photos_are_refused_by_name(tmp_path):
    folder = _folder(tmp_path)
    for i in range(2):
        _photo(folder / f"dot{i}.png", size=(1, 1))
    with pytest.raises(UsageError, match="smaller than 32 px") as info:
        images_in(folder)
    assert "dot0.png (1x1 px)" in str(info.value) and "dot1.png" in str(info.value)


def test_files_that_are_not_images_are_named_in_a_note(tmp_path):
    folder = _folder(tmp_path)
    (folder / "notes.txt").write_text("not a photo")
    said = []
    assert len(images_in(folder, say=said.append)) == 4
    assert len(said) == 1 and "notes.txt" in said[0] and said[0].startswith("note:")


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((40, 40), 32768, dtype=np.uint16)).save(path)  # mid grey in 16 bits
    assert Image.open(path).mode.startswith("I")
    x = load_image(path, (32, 32))
    expected = (0.5 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(x.mean(dim=(1, 2)).numpy(), expected, atol=1e-3), x.mean(dim=(1, 2))


def test_more_photos_asked_for_than_exist_is_said(tmp_path):
    paths = [_photo(tmp_path / f"{i}.png") for i in range(4)]
    said = []
    calib, held = calibration.split(paths, max_calibration=4, max_held_out=8, say=said.append)
    assert (len(calib), len(held)) == (2, 2)
    assert len(said) == 1 and "8 held-out photos asked for, 2 available" in said[0]
    said.clear()
    calibration.split(paths, max_calibration=2, max_held_out=2, say=said.append)
    assert not said


def test_photos_given_as_a_list_are_a_usage_error():
    with pytest.raises(UsageError, match="folder path"):
        images_in([])
