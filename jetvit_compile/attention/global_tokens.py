"""Global tokens: the few patch tokens every window reads exactly, taken out of their pooled cells.

A pooled cell averages its tokens' keys and values; a query that would attend to one token of the cell gets
the cell's mean instead (bench/results/pooled_error_1036.md: the values' pooling error is most of what the
pooled variant loses). DINOv2-class models send much of their long-range attention to a few tokens, so
the ``count`` tokens per head whose keys the mean query of the image favours most are read exactly by
every window, and their cells pool only the tokens left: every token still counts once. Selection is per
image and head from the block's own q and k (TopK): nothing is learned.
"""
from __future__ import annotations

import dataclasses

import torch

from .window import _tile_count, _tile_of


@dataclasses.dataclass
class GlobalTokens:
    """Keys ``k``/``v`` (``[B, H, count, D]``); ``keep`` (``[B, H, tokens]``, 0 for a global token, else 1);
    ``outside_selected`` (``[B, H, nWin, cells]``: global tokens of each cell outside each window);
    ``bias`` (``[B, H, nWin, count]``: -inf where a global token lies in the window, which reads it anyway)."""

    k: torch.Tensor
    v: torch.Tensor
    keep: torch.Tensor
    outside_selected: torch.Tensor
    bias: torch.Tensor


def select_global_tokens(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int], window: int,
                         pool: int, count: int) -> GlobalTokens:
    """The ``count`` patch tokens (of ``q``/``k``/``v``: ``[B, H, gh*gw, D]``, prefix tokens excluded) with
    the largest logit for the mean query, per batch item and head."""
    b, h, n, d = k.shape
    count = min(count, n)
    score = (k @ q.mean(2, keepdim=True).transpose(-1, -2)).squeeze(-1)  # [B, H, tokens]
    top = score.topk(count, dim=-1).indices  # [B, H, count]
    k_glob, v_glob = (t.gather(2, top.unsqueeze(-1).expand(b, h, count, d)) for t in (k, v))
    keep = torch.ones(b, h, n, dtype=k.dtype, device=k.device).scatter(
        -1, top, torch.zeros(top.shape, dtype=k.dtype, device=k.device))
    in_window, in_cell = ((_tile_of(grid, size, k.device)[top].unsqueeze(-1)
                           == torch.arange(_tile_count(grid, size), device=k.device)).to(k.dtype)
                          for size in (window, pool))  # [B, H, count, nWin], [B, H, count, cells]
    outside_selected = in_cell.sum(2).unsqueeze(2) - in_window.transpose(-1, -2) @ in_cell
    return GlobalTokens(k_glob, v_glob, keep, outside_selected, torch.log1p(-in_window.transpose(-1, -2)))
