"""How close a rewritten model's outputs stay to the original's, per image."""
from __future__ import annotations

import dataclasses

import torch


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two tensors, flattened (float64)."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    return float((a @ b) / denom) if denom > 0 else float("nan")


@dataclasses.dataclass(frozen=True)
class Fidelity:
    pearson: float  # mean over images
    pearson_min: float
    mae: float  # mean absolute error, mean over images
    images: int


def compare(reference: list[torch.Tensor], candidate: list[torch.Tensor]) -> Fidelity:
    """Per-image Pearson correlation and mean absolute error of ``candidate`` against ``reference``."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError("compare needs the same, non-zero number of outputs on both sides")
    corr = [pearson(r, c) for r, c in zip(reference, candidate)]
    mae = [float((r.detach().double() - c.detach().double()).abs().mean()) for r, c in zip(reference, candidate)]
    return Fidelity(sum(corr) / len(corr), min(corr), sum(mae) / len(mae), len(corr))
