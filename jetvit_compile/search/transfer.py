"""Attention transfer: learn each JetViT block's new parameters so that, fed the original q, k, v, it
reproduces the original attention output. Every original weight stays frozen (they are not in the block).

Deterministic for a seed; resumable (finished sites are read back from ``checkpoint``); the result is a
``{"site{i}.<param>": tensor}`` dict ready for ``Layout(params=...)``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .._files import atomic_write
from ..attention import JetViTAttention
from .capture import SiteCapture


def _site_loss(block: JetViTAttention, cap: SiteCapture) -> torch.Tensor:
    out = block(torch.zeros_like(cap.k).index_copy(2, cap.query_index, cap.q), cap.k, cap.v)
    return torch.nn.functional.mse_loss(out[:, :, cap.query_index], cap.out)


def transfer(
    captures: list[SiteCapture],
    sites: list[int] | None = None,
    steps: int = 200,
    lr: float = 1e-3,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[int, tuple[float, float]]]:
    """Train the JetViT block of each chosen site; return its parameters and ``{site: (loss before, after)}``."""
    from safetensors.torch import load_file, save_file

    done: dict[str, torch.Tensor] = {}
    if checkpoint and Path(checkpoint).is_file():
        done = load_file(str(checkpoint))
    params: dict[str, torch.Tensor] = {}
    losses: dict[int, tuple[float, float]] = {}
    chosen = [c for c in captures if sites is None or c.site.index in sites]
    for n, cap in enumerate(chosen):
        s = cap.site
        prefix = f"site{s.index}."
        torch.manual_seed(seed + s.index)
        block = JetViTAttention(s.num_heads, s.head_dim, s.grid, s.num_prefix_tokens)
        mine = {k[len(prefix):]: v for k, v in done.items() if k.startswith(prefix)}
        if mine:  # resumed: trained in an earlier run
            block.load_state_dict(mine)
        with torch.no_grad():
            before = float(_site_loss(block, cap))
        if not mine:
            opt = torch.optim.Adam(block.parameters(), lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                loss = _site_loss(block, cap)
                loss.backward()
                opt.step()
        with torch.no_grad():
            after = float(_site_loss(block, cap))
        losses[s.index] = (before, after)
        params.update({prefix + k: v.detach().clone() for k, v in block.state_dict().items()})
        if checkpoint:
            with atomic_write(checkpoint) as tmp:
                save_file({**done, **params}, tmp)
        if progress:
            import sys

            print(f"transfer site {s.index} ({n + 1}/{len(chosen)}): mse {before:.4g} -> {after:.4g}"
                  + (" (resumed)" if mine else ""), file=sys.stderr)
    return params, losses
