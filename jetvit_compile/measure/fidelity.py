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


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _tensors(out) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)


def compare(reference: list, candidate: list) -> Fidelity:
    """Per-image Pearson correlation and mean absolute error of ``candidate`` against ``reference``. An
    image's output is a tensor, or a list of tensors (taps: the features a head reads), whose
    correlations and errors are averaged tensor by tensor."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError("compare needs the same, non-zero number of outputs on both sides")
    pairs = [list(zip(_tensors(r), _tensors(c), strict=True)) for r, c in zip(reference, candidate)]
    corr = [_mean([pearson(r, c) for r, c in image]) for image in pairs]
    mae = [_mean([float((r.detach().double() - c.detach().double()).abs().mean()) for r, c in image])
           for image in pairs]
    return Fidelity(_mean(corr), min(corr), _mean(mae), len(corr))
