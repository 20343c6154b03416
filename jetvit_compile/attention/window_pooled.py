"""Window attention that also attends to pooled global keys: local detail plus global context.

A patch query attends to its window's tokens, to the prefix tokens, and to the keys and values of the
whole grid average-pooled over ``pool x pool`` cells. Each pooled logit is raised by log(cell size) so that
a pooled token weighs like the cell of tokens it stands for; cells cut by the grid's edge average and
weigh only their real tokens. Prefix queries attend to every token, as in plain window attention.
Training-free, it keeps most of what global attention computes at a fraction of its cost (JETVIT.md).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .window import _from_windows, _key_mask, _to_windows


def _pool(x: torch.Tensor, grid: tuple[int, int], pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, H, gh*gw, D]`` -> cell means ``[B, H, G, D]`` and cell sizes ``[G]`` (edge cells are smaller)."""
    b, h, _, d = x.shape
    gh, gw = grid
    ph, pw = -gh % pool, -gw % pool
    x = F.pad(x.reshape(b, h, gh, gw, d), (0, 0, 0, pw, 0, ph))
    nh, nw = (gh + ph) // pool, (gw + pw) // pool
    sums = x.reshape(b, h, nh, pool, nw, pool, d).sum(dim=(3, 5)).reshape(b, h, nh * nw, d)
    rows = torch.full((nh,), float(pool), device=x.device)
    cols = torch.full((nw,), float(pool), device=x.device)
    rows[-1], cols[-1] = pool - ph, pool - pw
    counts = (rows[:, None] * cols[None, :]).reshape(-1)
    return sums / counts[:, None], counts


def pooled_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    grid: tuple[int, int],
    num_prefix: int,
    window: int,
    pool: int,
) -> torch.Tensor:
    b, h, n, d = q.shape
    p = num_prefix
    patch = slice(p, n)
    k_pool, counts = _pool(k[:, :, patch], grid, pool)
    v_pool, _ = _pool(v[:, :, patch], grid, pool)
    qw, kw, vw = (_to_windows(t[:, :, patch], grid, window) for t in (q, k, v))
    n_win, w2 = qw.shape[2], qw.shape[3]
    # keys of every window: prefix, pooled cells, then the window's own tokens
    shared_k = torch.cat([k[:, :, :p], k_pool], dim=2).unsqueeze(2).expand(b, h, n_win, -1, d)
    shared_v = torch.cat([v[:, :, :p], v_pool], dim=2).unsqueeze(2).expand(b, h, n_win, -1, d)
    kw, vw = torch.cat([shared_k, kw], dim=3), torch.cat([shared_v, vw], dim=3)
    keys = kw.shape[3]
    # additive bias: 0 for prefix, log(cell size) for pooled cells, 0 / -inf for real / padded window keys
    window_ok = _key_mask(grid, window, 0, q.device)
    window_bias = (torch.zeros(n_win, w2, device=q.device) if window_ok is None
                   else torch.zeros(n_win, w2, device=q.device).masked_fill(~window_ok, -math.inf))
    shared_bias = torch.cat([torch.zeros(p, device=q.device), counts.log()]).expand(n_win, -1)
    bias = torch.cat([shared_bias, window_bias], dim=1).to(q.dtype)
    bias = bias.reshape(1, 1, n_win, 1, keys).expand(1, h, n_win, 1, keys).reshape(1, h * n_win, 1, keys)
    qw, kw, vw = (t.reshape(b, h * n_win, -1, d) for t in (qw, kw, vw))
    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=bias, scale=scale)
    out_patch = _from_windows(out.reshape(b, h, n_win, w2, d), grid, window)
    if not p:
        return out_patch
    out_prefix = F.scaled_dot_product_attention(q[:, :, :p], k, v, scale=scale)
    return torch.cat([out_prefix, out_patch], dim=2)


class PooledWindowAttention(torch.nn.Module):
    def __init__(self, scale: float, grid: tuple[int, int], num_prefix: int, window: int, pool: int):
        super().__init__()
        self.scale, self.grid, self.num_prefix = scale, tuple(grid), num_prefix
        self.window, self.pool = window, pool

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return pooled_window_attention(q, k, v, self.scale, self.grid, self.num_prefix, self.window, self.pool)

    def extra_repr(self) -> str:
        return f"window={self.window}, pool={self.pool}, grid={self.grid}, num_prefix={self.num_prefix}"
