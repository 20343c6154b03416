"""The search report: a Markdown page with the chosen layout, every layout the search scored, the
held-out check and measured speedup, a Pareto plot (predicted latency vs fidelity) and a per-site
sensitivity heat map (PNG, drawn with matplotlib's file-only Agg backend)."""
from __future__ import annotations

import os
from pathlib import Path

from .._files import atomic_write
from ..layout import compact


def _pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and fidelity (higher)."""
    front = []
    for i, (ms, fid) in enumerate(points):
        if not any((m <= ms and f >= fid) and (m < ms or f > fid) for m, f in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _figure_pareto(outcome, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = outcome.result.evaluated
    points = [(e.predicted_ms, e.fidelity) for e in evaluated]
    front = _pareto(points)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, c="#9aa5b1", label="layouts scored")
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "-o", c="#1f6feb", ms=4, label="Pareto front")
    best = outcome.result.best
    ax.scatter([best.predicted_ms], [best.fidelity], s=90, marker="*", c="#d1242f", zorder=5, label="chosen")
    ax.axvline(outcome.predicted_ms[outcome.baseline], ls="--", c="#57606a", lw=1,
               label=f"{outcome.baseline} (predicted)")
    ax.set_xlabel(f"predicted latency, ms ({outcome.backend} profile)")
    ax.set_ylabel("fidelity (Pearson r, calibration photos)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _figure_sensitivity(outcome, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(outcome.sensitivity)
    grid = np.array([outcome.sensitivity[n] for n in names])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * grid.shape[1] + 2), 0.6 * len(names) + 1.6), dpi=110)
    im = ax.imshow(1 - grid, aspect="auto", cmap="magma_r", vmin=0)
    ax.set_xticks(range(grid.shape[1]))
    ax.set_yticks(range(len(names)), labels=names)
    ax.set_xlabel("attention site (block)")
    for (r, c), v in np.ndenumerate(grid):
        ax.text(c, r, f"{v:.3f}", ha="center", va="center", fontsize=6, color="white" if 1 - v > 0.5 * (1 - grid.min()) else "black")
    fig.colorbar(im, ax=ax, label="1 - fidelity (this site alone swapped)")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _figure_curve(curve: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=110)
    ax.plot(range(1, len(curve) + 1), curve, c="#1f6feb", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (1 - Pearson), batch mean")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _cell(text: str) -> str:
    """``text`` inside a Markdown table cell: its ``|`` (a compact layout's separator) escaped."""
    return text.replace("|", "\\|")


def _markdown(outcome, pareto_png: str, heat_png: str) -> str:
    r = outcome.result
    layout = str(outcome.layout)
    lines = [
        "# JetViT attention search",
        "",
        f"**Chosen layout** ({'meets the target' if r.reached else 'target NOT met, best found'}): "
        f"`{compact(outcome.layout)}`",
        "",
        f"In full (what `--layout` takes; the layout file holds it too): `{layout}`",
        "",
        r.message + ".",
        "",
        f"Backend: {outcome.backend}. Variants, cheapest first: {', '.join(r.ladder)}.",
        "Fidelity: mean Pearson correlation with the original's "
        + (f"taps {', '.join(f'`{t}`' for t in outcome.taps)} (averaged per photo)." if outcome.taps
           else "first output."),
        f"Calibration photos ({len(outcome.calibration)}): {', '.join(outcome.calibration)}.",
        f"Held-out photos ({len(outcome.held_out_photos)}, never seen by the search): {', '.join(outcome.held_out_photos)}.",
        *([f"Validation photos ({len(outcome.validation_photos)}, never scored on): {', '.join(outcome.validation_photos)}.",
           "The layouts found, checked on them (in the order found): "
           + "; ".join(f"`{compact(k.split(','))}` {v:.4f}" for k, v in outcome.validation.items()) + "."]
          if outcome.validation else []),
        *[f"{n}" for n in outcome.notes],
        "",
        "## Result on held-out photos",
        "",
        f"Speedups are over **{outcome.baseline}** (the original as {outcome.backend} deploys it, same precision); "
        "the model as given is shown too.",
        "",
        f"| layout | fidelity (held-out) | measured ms | speedup over {outcome.baseline} | predicted ms |",
        "|---|---:|---:|---:|---:|",
    ]
    base = outcome.measured_ms[outcome.baseline]
    full = ",".join(["full"] * len(outcome.layout.choices))
    shown = {layout, full}

    def row(label: str, key: str, fidelity: float) -> str:
        predicted = outcome.predicted_ms.get(key)
        return (f"| {label} | {fidelity:.4f} | {outcome.measured_ms[key]:.1f} | {base / outcome.measured_ms[key]:.2f}x | "
                f"{'' if predicted is None else f'{predicted:.1f}'} |")

    lines.append(row("original, as given", "original", 1.0))
    lines.append(row(outcome.baseline, outcome.baseline, outcome.held_out.get(full, 1.0)))
    lines.append(row(f"`{_cell(compact(outcome.layout))}`", layout, outcome.held_out[layout]))
    for text, fid in outcome.held_out.items():
        if text not in shown:
            lines.append(f"| `{text.split(',')[0]}` everywhere | {fid:.4f} | | | |")
    lines += ["", f"![Pareto front]({pareto_png})", "", "## Per-site sensitivity", "",
              "Fidelity on calibration photos with one site swapped to the variant and every other site full.", "",
              f"![sensitivity heat map]({heat_png})", "",
              "| variant | " + " | ".join(str(i) for i in range(len(next(iter(outcome.sensitivity.values()), [])))) + " |",
              "|---|" + "---:|" * len(next(iter(outcome.sensitivity.values()), []))]
    for name, row in outcome.sensitivity.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    if outcome.transfer is not None:
        lines += ["", "## Stage 1: attention transfer", "",
                  "Every learned rung trained at every site on captured q, k, v of the calibration photos; losses "
                  "(output error relative to its mean square) and Pearson of the block's output, on captured photos "
                  "the training never saw.", "", outcome.transfer.table()]
    if outcome.distilled is not None:
        d = outcome.distilled
        lines += ["", "## Stage 2: end-to-end distillation of the chosen layout", "",
                  f"{d.steps} steps, all the layout's new parameters jointly, against the original's "
                  f"{'taps' if outcome.taps else 'output'} on the calibration photos: loss (1 - Pearson) "
                  f"{d.loss_before:.4f} -> {d.loss_after:.4f}.", "", "![stage 2 loss curve](stage2_loss.png)"]
    lines += ["", "## Every layout scored", "", "| step | layout | fidelity (calibration) | predicted ms |", "|---:|---|---:|---:|"]
    for e in r.evaluated:
        lines.append(f"| {e.step} | `{_cell(compact(e.choices))}` | {e.fidelity:.4f} | {e.predicted_ms:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(outcome, folder: str | os.PathLike) -> Path:
    """Write ``report.md``, ``pareto.png`` and ``sensitivity.png`` into ``folder``; return the Markdown's path."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        from ..errors import UsageError

        raise UsageError(f"report folder {folder} is a file; give a folder for the report")
    folder.mkdir(parents=True, exist_ok=True)
    _figure_pareto(outcome, folder / "pareto.png")
    _figure_sensitivity(outcome, folder / "sensitivity.png")
    if outcome.distilled is not None:
        _figure_curve(outcome.distilled.curve, folder / "stage2_loss.png")
    path = folder / "report.md"
    with atomic_write(path) as tmp:
        Path(tmp).write_text(_markdown(outcome, "pareto.png", "sensitivity.png"))
    return path
