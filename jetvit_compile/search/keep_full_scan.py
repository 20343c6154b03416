"""The keep-full scan JETVIT.md describes: swap every site to a variant, then put one site at a time back
to full attention and see how much fidelity comes back (the search's own scan, in run.py, is the converse:
each site alone on a variant, the rest full).

Scores are end-to-end (mean Pearson correlation of the model's output with the original's on the given
images), never a block's loss alone: blocks interact, so the search scores whole layouts too.
"""
from __future__ import annotations

import dataclasses

import torch

from ..frontend import open_model
from ..layout import Layout, parse_choice
from ..measure.fidelity import compare


@dataclasses.dataclass(frozen=True)
class KeepFullScan:
    variant: str
    all_variant: float  # correlation with every site swapped
    keep_full: list[float]  # [i]: correlation with every site swapped except site i

    @property
    def gains(self) -> list[float]:
        """How much keeping each site full gives back; the largest mark the sites to keep full."""
        return [c - self.all_variant for c in self.keep_full]


def keep_full_scan(
    model,
    images: list[torch.Tensor],
    variant: str = "window:14+pool:4",
    params: dict[str, torch.Tensor] | None = None,
) -> KeepFullScan:
    """The scan on ``model`` (anything :func:`..frontend.open_model` takes) over ``images``."""
    parse_choice(variant)  # a bad variant fails here, before any model runs
    vit = open_model(model)
    evaluator = vit.evaluator()
    reference = evaluator.outputs(None, images)

    def score(text: str) -> float:
        layout = Layout.parse(text)
        layout.params = dict(params or {})  # e.g. transferred JetViT parameters
        return compare(reference, evaluator.outputs(layout, images)).pearson

    everywhere = score(variant)
    keep = [score(f"{variant};full@{i}") for i in range(len(vit.require_sites()))]
    return KeepFullScan(variant, everywhere, keep)
