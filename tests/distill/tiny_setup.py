"""The small student the seed, resume and data-parallel tests train (in-process and under torchrun alike):
the one-block TinyViT of tests/targets at 32 px, its site a linear:jetvit block, on real photos."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, when run by torchrun

from jetvit_compile.distill.end_to_end import EndToEndSettings  # noqa: E402
from jetvit_compile.distill.students import Student, fx_student  # noqa: E402
from jetvit_compile.images import photo_paths  # noqa: E402
from targets.tiny_vit import tiny_program  # noqa: E402

SETTINGS = EndToEndSettings(steps=4, lr=1e-2, batch=4, seed=3, checkpoint_every=2)


def tiny_student(layout: str = "linear:jetvit", seed: int = 0, taps=None) -> Student:
    return fx_student(tiny_program(32), layout, taps=taps, seed=seed)


def photos(n: int = 6) -> list[Path]:
    return photo_paths()[:n]
