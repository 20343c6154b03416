"""Models side by side: one row each (latency, speedup over the anchor row, fidelity to the first), and their table."""
from __future__ import annotations

import dataclasses

import torch

from .fidelity import Fidelity, compare
from .timing import Latency


@dataclasses.dataclass(frozen=True)
class LayoutResult:
    layout: str  # the row's label; the first row is the reference every fidelity is to
    summary: dict[str, int]
    latency: Latency
    speedup: float  # the anchor row's median / this median (the anchor: the first row unless told)
    fidelity: Fidelity | None  # None for the first row


def side_by_side(labels: list[tuple[str, dict[str, int]]], latencies: list[Latency],
                 outputs: list[list[torch.Tensor]], anchor: int = 0) -> list[LayoutResult]:
    """Rows: speedup of each median over model ``anchor``'s (e.g. the original compiled), fidelity of each
    model's outputs to the first model's."""
    base = latencies[anchor].median_s
    return [
        LayoutResult(name, summary, lat, base / lat.median_s, compare(outputs[0], outs) if i else None)
        for i, ((name, summary), lat, outs) in enumerate(zip(labels, latencies, outputs))
    ]


def layout_table(rows: list[LayoutResult]) -> str:
    """A Markdown table, one row per layout (or model), its columns padded so it reads aligned in a terminal;
    a ``|`` inside a cell (a compact layout's separator) is escaped."""
    head = ["layout", "latency ms (median)", "p90 ms", "speedup", "pearson mean", "pearson min", "MAE"]
    body = []
    for r in rows:
        f = r.fidelity
        fid = [f"{f.pearson:.3f}", f"{f.pearson_min:.3f}", f"{f.mae:.4f}"] if f else ["1", "1", "0"]
        body.append([r.layout.replace("|", "\\|"), f"{r.latency.median_ms:.1f}", f"{r.latency.p90_s * 1e3:.1f}",
                     f"{r.speedup:.2f}x", *fid])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])
