"""Original vs rewritten layouts of one exported model, side by side: latency, speedup, fidelity."""
from __future__ import annotations

import torch

from .api import rewrite
from .layout import Layout
from .measure.rows import LayoutResult, side_by_side
from .measure.timing import interleaved


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
