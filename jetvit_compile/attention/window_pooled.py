"""Window attention that also attends to pooled global keys: local detail plus global context.

A patch query attends to its window's tokens, to the prefix tokens, and to the keys and values of the
whole grid average-pooled over ``pool x pool`` cells. Every token counts once: a pooled logit is raised by
log(number of the cell's tokens outside the query's window), so that a pooled token weighs like the tokens
it stands for and a cell inside the window (already seen exactly) drops out; cells cut by the grid's edge
average and weigh only their real tokens. Prefix queries attend to every token, as in window attention.
Training-free, it keeps most of what global attention computes at a fraction of its cost (JETVIT.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .window import windowed_attention


def _overlaps(length: int, window: int, pool: int) -> list[list[int]]:
    """Along one axis of ``length`` tokens: ``[window i][cell j]`` = tokens in both (the last of each is cut)."""
    def span(i: int, size: int) -> range:
        return range(i * size, min((i + 1) * size, length))

    return [[len(set(span(i, window)) & set(span(j, pool))) for j in range(-(-length // pool))]
            for i in range(-(-length // window))]


def outside_counts(grid: tuple[int, int], window: int, pool: int) -> torch.Tensor:
    """``[nWin, G]``: how many tokens of cell G lie outside window nWin. Windows and cells are rectangles, so
    the 2-D counts are products of the 1-D ones. Built from shapes alone (Python ints): an exported graph
    holds it as a constant."""
    (gh, gw), out = grid, []
    rows, cols = _overlaps(gh, window, pool), _overlaps(gw, window, pool)
    row_size = [min(pool, gh - j * pool) for j in range(len(rows[0]))]
    col_size = [min(pool, gw - j * pool) for j in range(len(cols[0]))]
    for wr in rows:
        for wc in cols:
            out.append([rs * cs - ro * co for rs, ro in zip(row_size, wr) for cs, co in zip(col_size, wc)])
    return torch.tensor(out, dtype=torch.float64)


def pooled_bias(grid: tuple[int, int], window: int, pool: int) -> torch.Tensor:
    """``[nWin, G]``: log(tokens of cell G outside window nWin), -inf for cells wholly inside the window."""
    return torch.log(outside_counts(grid, window, pool)).float()  # the log in double, as math.log


def _pool(x: torch.Tensor, grid: tuple[int, int], pool: int) -> torch.Tensor:
    """``[B, H, gh*gw, D]`` -> cell means ``[B, H, G, D]`` (cells cut by the grid's edge average their real tokens)."""
    b, h, _, d = x.shape
    gh, gw = grid
    ph, pw = -gh % pool, -gw % pool
    x = F.pad(x.reshape(b, h, gh, gw, d), (0, 0, 0, pw, 0, ph))
    nh, nw = (gh + ph) // pool, (gw + pw) // pool
    sums = x.reshape(b, h, nh, pool, nw, pool, d).sum(dim=(3, 5)).reshape(b, h, nh * nw, d)
    counts = torch.tensor([min(pool, gh - i * pool) * min(pool, gw - j * pool) for i in range(nh) for j in range(nw)],
                          dtype=x.dtype, device=x.device)
    return sums / counts[:, None]


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
    k_pool, v_pool = _pool(k[:, :, patch], grid, pool), _pool(v[:, :, patch], grid, pool)
    bias = pooled_bias(grid, window, pool).to(q.device)
    return windowed_attention(q, k, v, scale, grid, num_prefix, window, k_pool, v_pool, bias)


class PooledWindowAttention(torch.nn.Module):
    def __init__(self, scale: float, grid: tuple[int, int], num_prefix: int, window: int, pool: int):
        super().__init__()
        self.scale, self.grid, self.num_prefix = scale, tuple(grid), num_prefix
        self.window, self.pool = window, pool

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return pooled_window_attention(q, k, v, self.scale, self.grid, self.num_prefix, self.window, self.pool)

    def extra_repr(self) -> str:
        return f"window={self.window}, pool={self.pool}, grid={self.grid}, num_prefix={self.num_prefix}"
