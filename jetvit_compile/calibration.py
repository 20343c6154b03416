"""Calibration photos: read a user's folder, split it into the images the search scores on and the
held-out images the result is judged on (never the same photos), and load them at the model's size."""
from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from .errors import UsageError
from .images import load_image

MIN_PER_SIDE = 2  # a correlation over one photo says little; two per side is the least we accept


def split(paths: list[Path], held_out: float = 0.5, seed: int = 0, max_calibration: int | None = None,
          max_held_out: int | None = None, say: Callable[[str], None] | None = None) -> tuple[list[Path], list[Path]]:
    """A seeded shuffle of ``paths`` cut into (calibration, held-out); ``held_out`` is the held-out share.
    When a side gets fewer photos than ``max_calibration`` / ``max_held_out`` ask for, ``say`` (default: stderr)
    is told how many there are."""
    if not 0 < held_out < 1:
        raise UsageError(f"the held-out share must be between 0 and 1, got {held_out}")
    if len(paths) < 2 * MIN_PER_SIDE:
        raise UsageError(f"{len(paths)} image(s) are too few to split into calibration and held-out photos: give at "
                         f"least {2 * MIN_PER_SIDE} (the search scores on some and judges the result on the others)")
    order = sorted(paths)
    random.Random(seed).shuffle(order)
    cut = min(max(round(len(order) * (1 - held_out)), MIN_PER_SIDE), len(order) - MIN_PER_SIDE)
    calib, held = order[:cut], order[cut:]
    short = [f"{want} {what} photos asked for, {len(have)} available" for want, have, what in
             ((max_calibration, calib, "calibration"), (max_held_out, held, "held-out"))
             if want is not None and want > len(have)]
    if short:
        (say or (lambda m: print(m, file=sys.stderr)))(
            f"note: {'; '.join(short)} (the {len(paths)} photos are split between the two); using what there is")
    return calib[:max_calibration], held[:max_held_out]


def sizes_note(paths: list[Path], size: tuple[int, int]) -> str | None:
    """A line for the user when the photos come in several sizes (all are resized to the model's input)."""
    seen = set()
    for p in paths:
        with Image.open(p) as im:
            seen.add(im.size)
    if len(seen) <= 1:
        return None
    return (f"note: the {len(paths)} photos come in {len(seen)} sizes; each is resized to the model's input "
            f"{size[0]}x{size[1]} (aspect ratios change); pass --input-shape to choose another size")


def load(paths: list[Path], size: tuple[int, int]) -> list[torch.Tensor]:
    """Each photo as ``[1, 3, H, W]`` at ``size``."""
    return [load_image(p, size).unsqueeze(0) for p in paths]

