from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from jetvit_compile import images
from jetvit_compile.errors import UsageError
from jetvit_compile.images import IMAGENET_MEAN, IMAGENET_STD, images_in, load_batch, load_image, photo_paths


def test_photo_paths_are_sorted_real_files():
    paths = photo_paths(limit=3)
    assert len(paths) == 3
    assert paths == sorted(paths)
    assert all(p.is_file() for p in paths)


def test_photo_paths_fall_back_to_scikit_image(tmp_path, monkeypatch):
    pytest.importorskip("skimage")
    monkeypatch.setattr(images, "SHARED_PHOTOS", tmp_path / "absent")
    monkeypatch.setenv("JETVIT_COMPILE_CACHE", str(tmp_path / "cache"))
    paths = photo_paths()
    assert len(paths) >= 4
    assert {"astronaut.png", "chelsea.png", "coffee.png", "rocket.png"} <= {p.name for p in paths}
    assert load_image(paths[0], (28, 42)).shape == (3, 28, 42)


def test_load_image_normalises_rgb(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (50, 30), (255, 0, 0)).save(path)
    x = load_image(path, (14, 28))
    assert x.shape == (3, 14, 28) and x.dtype == torch.float32
    expected = (np.array([1.0, 0.0, 0.0]) - IMAGENET_MEAN) / IMAGENET_STD
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor(expected, dtype=torch.float32), atol=1e-5)


def test_load_batch_stacks(tmp_path):
    for i in range(2):
        Image.new("L", (20, 20), 100 * i).save(tmp_path / f"{i}.png")  # grey input becomes RGB
    assert load_batch(sorted(tmp_path.iterdir()), (14, 14)).shape == (2, 3, 14, 14)


def test_images_in_missing_folder(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        images_in(tmp_path / "nope")


def test_images_in_empty_folder(tmp_path):
    with pytest.raises(UsageError, match="is empty"):
        images_in(tmp_path)


def test_images_in_lists_unreadable_files(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(UsageError, match="no readable images") as info:
        images_in(tmp_path)
    assert "notes.txt" in str(info.value) and "broken.jpg" in str(info.value)


def test_images_in_keeps_readable_ones(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "b.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "a.jpg")
    (tmp_path / "c.txt").write_text("skip me")
    assert [p.name for p in images_in(tmp_path)] == ["a.jpg", "b.png"]
