"""Per-site sensitivity of the model's real output: swap every site to a variant, then put one site at a
time back to full attention and see how much fidelity comes back (the scan JETVIT.md describes).

Scores are end-to-end (mean Pearson correlation of the model's output with the original's on the given
images), never a block's loss alone: blocks interact, so the search scores whole layouts too.
"""
from __future__ import annotations

import dataclasses

import torch

from ..measure.fidelity import compare
from ..layout import Layout, parse_choice
from ..passes.fx.program import rewrite_module, sites_of


@dataclasses.dataclass(frozen=True)
class Sensitivity:
    variant: str
    all_variant: float  # correlation with every site swapped
    keep_full: list[float]  # [i]: correlation with every site swapped except site i

    @property
    def gains(self) -> list[float]:
        """How much keeping each site full gives back; the largest mark the sites to keep full."""
        return [c - self.all_variant for c in self.keep_full]


def site_sensitivity(
    program: torch.export.ExportedProgram,
    images: list[torch.Tensor],
    variant: str = "window:14+pool:4",
    params: dict[str, torch.Tensor] | None = None,
) -> Sensitivity:
    parse_choice(variant)  # a bad variant fails here, before any model runs
    n = len(sites_of(program.module()))
    with torch.no_grad():
        reference = [program.module()(x) for x in images]

        def score(text: str) -> float:
            layout = Layout.parse(text)
            layout.params = dict(params or {})  # e.g. transferred JetViT parameters
            model = rewrite_module(program, layout)[0]  # the rewritten graph, not re-exported: same maths
            return compare(reference, [model(x) for x in images]).pearson

        everywhere = score(variant)
        keep = [score(f"{variant};full@{i}") for i in range(n)]
    return Sensitivity(variant, everywhere, keep)
