"""Plain-text / Markdown tables of evaluation results."""
from __future__ import annotations

from .evaluate import LayoutResult


def layout_table(rows: list[LayoutResult]) -> str:
    """A Markdown table: one row per layout (or model)."""
    head = ["layout", "latency ms (median)", "p90 ms", "speedup", "pearson mean", "pearson min", "MAE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        f = r.fidelity
        fid = [f"{f.pearson:.3f}", f"{f.pearson_min:.3f}", f"{f.mae:.4f}"] if f else ["1", "1", "0"]
        cells = [r.layout, f"{r.latency.median_ms:.1f}", f"{r.latency.p90_s * 1e3:.1f}", f"{r.speedup:.2f}x", *fid]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
