"""The search's learned stages: when its ladder holds learned blocks (``linear:jetvit``, ``linear:hedgehog``,
``+learned`` windows), stage 1 trains every one of them at every site before any layout is scored (block-wise
attention transfer on captured q, k, v of the calibration photos), so that layouts are scored with learned
parameters; the chosen layout then gets stage 2 (all its new parameters trained jointly against the model's
output, or taps) before the held-out check."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from ..distill.attention_transfer import TransferResult, TransferSettings, attention_transfer
from ..distill.end_to_end import DistillResult, EndToEndSettings, distill_end_to_end
from ..errors import UsageError
from ..layout import Choice, Layout
from .settings import SearchSettings


def learned_rungs(ladder: Sequence[Choice]) -> list[Choice]:
    return [c for c in ladder if c.is_learned]


def stage1(model, ladder: Sequence[Choice], images: list[torch.Tensor], settings: SearchSettings,
           checkpoint: str | os.PathLike | None) -> TransferResult | None:
    """Every learned rung trained at every site on ``images`` (the calibration photos); None when none learns.
    Captures stream to a temporary folder (one site's photos in memory at a time) removed afterwards."""
    learned = learned_rungs(ladder)
    if not learned:
        return None
    holdout = max(1, len(images) // 4)
    if len(images) < holdout + 1:
        raise UsageError(f"learned variants ({', '.join(map(str, learned))}) need at least 2 calibration photos "
                         "for attention transfer; give more with --calib-images")
    with tempfile.TemporaryDirectory(prefix="jetvit-captures-") as folder:
        store = model.capture(images, folder)
        return attention_transfer(store, learned, settings=TransferSettings(steps=settings.transfer_steps,
                                  holdout=holdout, seed=settings.seed), checkpoint=checkpoint,
                                  progress=settings.progress)


def with_params(choices: Sequence[Choice], transfer: TransferResult | None, fingerprint: str | None = None) -> Layout:
    """A layout of ``choices`` carrying stage 1's parameters for its learned sites."""
    params = transfer.layout_params(choices) if transfer is not None else {}
    return Layout(choices=list(choices), params=params, fingerprint=fingerprint)


def stage2(model, layout: Layout, photos: Sequence[Path], settings: SearchSettings,
           checkpoint: str | os.PathLike | None) -> DistillResult | None:
    """The chosen layout's new parameters trained jointly (from stage 1's) on ``photos``; None when the
    layout has no learned site or ``distill_steps`` is 0."""
    if settings.distill_steps == 0 or not any(c.is_learned for c in layout.choices):
        return None
    student = model.student(layout, settings.taps, settings.train_shapes, settings.seed)
    return distill_end_to_end(student, list(photos), EndToEndSettings(steps=settings.distill_steps, seed=settings.seed,
                                                                      device=settings.device),
                              checkpoint=checkpoint, progress=settings.progress)
