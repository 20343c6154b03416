"""Original vs rewritten layouts of one exported model, side by side: latency, speedup, fidelity."""
from __future__ import annotations

import dataclasses

import torch

from .api import rewrite
from .fidelity import Fidelity, compare
from .layout import Layout
from .timing import Latency, interleaved


@dataclasses.dataclass(frozen=True)
class LayoutResult:
    layout: str  # "original" for the unmodified model
    summary: dict[str, int]
    latency: Latency
    speedup: float  # original median / this median
    fidelity: Fidelity | None  # None for the original


def evaluate_layouts(
    program: torch.export.ExportedProgram,
    layouts: list[Layout | str],
    inputs: list[torch.Tensor],
    repeat: int = 5,
    output=lambda out: out,
) -> list[LayoutResult]:
    """Time the original and each rewrite on ``inputs[0]`` (interleaved runs, median), and compare their
    outputs (``output(model(x))``) with the original's on every input."""
    models = [("original", {}, program.module())]
    for layout in layouts:
        new, summary = rewrite(program, layout)
        models.append((str(Layout.coerce(layout)), summary, new.module()))
    with torch.no_grad():
        latencies = interleaved([lambda m=m: m(inputs[0]) for _, _, m in models], repeat=repeat)
        outputs = [[output(m(x)) for x in inputs] for _, _, m in models]
    return side_by_side([(name, summary) for name, summary, _ in models], latencies, outputs)


def side_by_side(labels: list[tuple[str, dict[str, int]]], latencies: list[Latency],
                 outputs: list[list[torch.Tensor]]) -> list[LayoutResult]:
    """Rows against the first model: speedup of each median, fidelity of each model's outputs."""
    base = latencies[0].median_s
    return [
        LayoutResult(name, summary, lat, base / lat.median_s, compare(outputs[0], outs) if i else None)
        for i, ((name, summary), lat, outs) in enumerate(zip(labels, latencies, outputs))
    ]
