"""Window attention over the 2-D patch grid, with prefix tokens (class, registers) kept global.

* prefix queries attend to every token (their rows are full attention);
* a patch query attends to the patch tokens of its ``window x window`` cell plus all prefix tokens;
* a grid that the window does not divide is padded at the bottom/right and the padding masked out.
With one window covering the whole grid this is exactly full attention.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .core import attend


def tiling_window(grid: tuple[int, int], sizes: range = range(8, 21)) -> int:
    """The window in ``sizes`` that tiles ``grid`` with the least padding (padded rows and columns are
    computed and thrown away: window 14 pads a 74x74 grid to 84x84, 29% waste; window 15 pads it to 75x75),
    the larger window on a tie; smaller than the grid, so that there are windows at all. A grid no size
    fits under gets two windows per side."""
    gh, gw = grid
    fits = [w for w in sizes if w < max(gh, gw)]
    if not fits:
        return max(1, -(-max(gh, gw) // 2))
    return min(fits, key=lambda w: (-(-gh // w) * w * (-(-gw // w) * w), -w))


def _to_windows(x: torch.Tensor, grid: tuple[int, int], window: int, group: int | None = None) -> torch.Tensor:
    """``[B, H, gh*gw, D]`` -> ``[B, H, nWin, window*window, D]`` (zero padded). With ``group`` (which divides
    ``window``) a window's tokens come ``group x group`` block by block, so that ``[..., window², D]``
    reshapes to ``[..., (window/group)², group², D]``: the window's groups."""
    b, h, _, d = x.shape
    gh, gw = grid
    ph, pw = -gh % window, -gw % window
    x = x.reshape(b, h, gh, gw, d)
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    nh, nw = (gh + ph) // window, (gw + pw) // window
    g = group or window
    k = window // g
    x = x.reshape(b, h, nh, k, g, nw, k, g, d).permute(0, 1, 2, 5, 3, 6, 4, 7, 8)
    return x.reshape(b, h, nh * nw, window * window, d)


def _from_windows(x: torch.Tensor, grid: tuple[int, int], window: int, group: int | None = None) -> torch.Tensor:
    """Inverse of :func:`_to_windows`, cropping the padding."""
    b, h, _, _, d = x.shape
    gh, gw = grid
    nh, nw = -(-gh // window), -(-gw // window)
    g = group or window
    k = window // g
    x = x.reshape(b, h, nh, nw, k, k, g, g, d).permute(0, 1, 2, 4, 6, 3, 5, 7, 8)
    x = x.reshape(b, h, nh * window, nw * window, d)[:, :, :gh, :gw]
    return x.reshape(b, h, gh * gw, d)


def _tile_count(grid: tuple[int, int], size: int) -> int:
    """How many ``size x size`` tiles (windows or pooled cells) cover ``grid``, the last of each axis cut."""
    return -(-grid[0] // size) * -(-grid[1] // size)


def _tile_of(grid: tuple[int, int], size: int, device: torch.device | None = None) -> torch.Tensor:
    """``[gh*gw]``: the ``size x size`` tile each patch token falls in, row-major (as :func:`_to_windows`
    numbers them). From shapes alone: a constant in exported graphs."""
    gh, gw = grid
    rows, cols = torch.arange(gh, device=device) // size, torch.arange(gw, device=device) // size
    return (rows[:, None] * -(-gw // size) + cols[None, :]).flatten()


def _real_tokens(grid: tuple[int, int], size: int, device: torch.device | None = None,
                 group: int | None = None) -> torch.Tensor:
    """``[nTiles, size²]`` bool: which slots of each ``size x size`` tile of ``grid`` (as :func:`_to_windows`
    cuts it) are real tokens, not padding. From shapes alone: a constant in exported graphs."""
    ones = torch.ones(1, 1, grid[0] * grid[1], 1, device=device)
    return _to_windows(ones, grid, size, group)[0, 0, :, :, 0] > 0


def _padding_bias(grid: tuple[int, int], window: int, device: torch.device | None = None,
                  group: int | None = None) -> torch.Tensor:
    """``[nWin, window²]``: 0 for a window's real tokens, -inf for its padding."""
    real = _real_tokens(grid, window, device, group)
    return torch.zeros(real.shape, device=device).masked_fill(~real, -math.inf)


def _key_bias(grid: tuple[int, int], window: int, shared_bias: torch.Tensor | None, num_shared: int,
              device: torch.device) -> torch.Tensor | None:
    """``[nWin, S + window²]`` additive bias: ``shared_bias`` (``[S]`` or ``[nWin, S]``; None: zeros) for the
    S shared keys, 0 for a
    window's real keys, -inf for its padding; None when it would be all zeros (the fast, unmasked path).
    Decided from shapes alone, so that exported graphs have no data-dependent branch."""
    gh, gw = grid
    if not (gh % window or gw % window) and shared_bias is None:
        return None
    if shared_bias is None:
        shared_bias = torch.zeros(num_shared, device=device)
    window_bias = _padding_bias(grid, window, device)
    return torch.cat([shared_bias.to(device).expand(window_bias.shape[0], -1), window_bias], dim=1)


def windowed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    grid: tuple[int, int],
    num_prefix: int,
    window: int,
    extra_k: torch.Tensor | None = None,
    extra_v: torch.Tensor | None = None,
    extra_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Prefix queries attend to every token; a patch query attends to the prefix tokens, to ``extra_k`` /
    ``extra_v`` (``[B, H, E, D]``, shared by every window, logits raised by ``extra_bias``: ``[E]``, or
    ``[nWin, E]`` for a bias per window) and to its own window."""
    b, h, n, d = q.shape
    p = num_prefix
    patch = slice(p, n)
    qw, kw, vw = (_to_windows(t[:, :, patch], grid, window) for t in (q, k, v))
    n_win, w2 = qw.shape[2], qw.shape[3]
    shared_k, shared_v, shared_bias = k[:, :, :p], v[:, :, :p], None
    if extra_k is not None:
        shared_k, shared_v = torch.cat([shared_k, extra_k], dim=2), torch.cat([shared_v, extra_v], dim=2)
        extra_bias = extra_bias.to(q.device)
        shared_bias = torch.cat([torch.zeros(*extra_bias.shape[:-1], p, device=q.device), extra_bias], dim=-1)
    s = shared_k.shape[2]
    if s:
        kw = torch.cat([shared_k.unsqueeze(2).expand(b, h, n_win, s, d), kw], dim=3)
        vw = torch.cat([shared_v.unsqueeze(2).expand(b, h, n_win, s, d), vw], dim=3)
    keys = s + w2
    bias = _key_bias(grid, window, shared_bias, s, q.device)
    if bias is not None:
        bias = bias.to(q.dtype).reshape(1, 1, n_win, 1, keys).expand(1, h, n_win, 1, keys)
        bias = bias.reshape(1, h * n_win, 1, keys)
    # windows folded into the head dim: 4-D sdpa takes the fused CPU/GPU kernels, 5-D the slow math path
    qw, kw, vw = (t.reshape(b, h * n_win, -1, d) for t in (qw, kw, vw))
    out = attend(qw, kw, vw, scale, bias)
    return with_prefix_rows(q, k, v, scale, p, _from_windows(out.reshape(b, h, n_win, w2, d), grid, window))


def with_prefix_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, num_prefix: int,
                     out_patch: torch.Tensor) -> torch.Tensor:
    """The patch rows ``out_patch`` after the prefix rows, which are full attention over every token."""
    if not num_prefix:
        return out_patch
    out_prefix = attend(q[:, :, :num_prefix], k, v, scale)
    return torch.cat([out_prefix, out_patch], dim=2)


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    grid: tuple[int, int],
    num_prefix: int,
    window: int,
) -> torch.Tensor:
    return windowed_attention(q, k, v, scale, grid, num_prefix, window)


class WindowAttention(torch.nn.Module):
    def __init__(self, scale: float, grid: tuple[int, int], num_prefix: int, window: int):
        super().__init__()
        self.scale, self.grid, self.num_prefix, self.window = scale, tuple(grid), num_prefix, window

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return window_attention(q, k, v, self.scale, self.grid, self.num_prefix, self.window)

    def extra_repr(self) -> str:
        return f"window={self.window}, grid={self.grid}, num_prefix={self.num_prefix}"
