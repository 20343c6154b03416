"""Window attention that also attends to pooled global keys: local detail plus global context.

A patch query attends to its window's tokens, to the prefix tokens, and to the keys and values of the
whole grid average-pooled over ``pool x pool`` cells. Each pooled logit is raised by log(cell size) so that
a pooled token weighs like the cell of tokens it stands for; cells cut by the grid's edge average and
weigh only their real tokens. Prefix queries attend to every token, as in plain window attention.
Training-free, it keeps most of what global attention computes at a fraction of its cost (JETVIT.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .window import windowed_attention


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
    patch = slice(num_prefix, q.shape[2])
    k_pool, counts = _pool(k[:, :, patch], grid, pool)
    v_pool, _ = _pool(v[:, :, patch], grid, pool)
    return windowed_attention(q, k, v, scale, grid, num_prefix, window, k_pool, v_pool, counts.log())


class PooledWindowAttention(torch.nn.Module):
    def __init__(self, scale: float, grid: tuple[int, int], num_prefix: int, window: int, pool: int):
        super().__init__()
        self.scale, self.grid, self.num_prefix = scale, tuple(grid), num_prefix
        self.window, self.pool = window, pool

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return pooled_window_attention(q, k, v, self.scale, self.grid, self.num_prefix, self.window, self.pool)

    def extra_repr(self) -> str:
        return f"window={self.window}, pool={self.pool}, grid={self.grid}, num_prefix={self.num_prefix}"
