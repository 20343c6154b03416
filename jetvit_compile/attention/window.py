"""Window attention over the 2-D patch grid, with prefix tokens (class, registers) kept global.

* prefix queries attend to every token (their rows are full attention);
* a patch query attends to the patch tokens of its ``window x window`` cell plus all prefix tokens;
* a grid that the window does not divide is padded at the bottom/right and the padding masked out.
With one window covering the whole grid this is exactly full attention.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _to_windows(x: torch.Tensor, grid: tuple[int, int], window: int) -> torch.Tensor:
    """``[B, H, gh*gw, D]`` -> ``[B, H, nWin, window*window, D]`` (zero padded)."""
    b, h, _, d = x.shape
    gh, gw = grid
    ph, pw = -gh % window, -gw % window
    x = x.reshape(b, h, gh, gw, d)
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    nh, nw = (gh + ph) // window, (gw + pw) // window
    x = x.reshape(b, h, nh, window, nw, window, d).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, h, nh * nw, window * window, d)


def _from_windows(x: torch.Tensor, grid: tuple[int, int], window: int) -> torch.Tensor:
    """Inverse of :func:`_to_windows`, cropping the padding."""
    b, h, _, _, d = x.shape
    gh, gw = grid
    nh, nw = -(-gh // window), -(-gw // window)
    x = x.reshape(b, h, nh, nw, window, window, d).permute(0, 1, 2, 4, 3, 5, 6)
    x = x.reshape(b, h, nh * window, nw * window, d)[:, :, :gh, :gw]
    return x.reshape(b, h, gh * gw, d)


def _key_mask(grid: tuple[int, int], window: int, num_prefix: int, device: torch.device) -> torch.Tensor | None:
    """``[nWin, P + window²]`` bool mask of real keys, or None when nothing is padded."""
    gh, gw = grid
    if gh % window == 0 and gw % window == 0:
        return None
    valid = torch.ones(1, 1, gh * gw, 1, device=device)
    valid = _to_windows(valid, grid, window)[0, 0, :, :, 0] > 0  # [nWin, w²]
    prefix = torch.ones(valid.shape[0], num_prefix, dtype=torch.bool, device=device)
    return torch.cat([prefix, valid], dim=1)


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    grid: tuple[int, int],
    num_prefix: int,
    window: int,
) -> torch.Tensor:
    b, h, n, d = q.shape
    p = num_prefix
    patch = slice(p, n)
    qw, kw, vw = (_to_windows(t[:, :, patch], grid, window) for t in (q, k, v))
    n_win = qw.shape[2]
    if p:
        kp = k[:, :, :p].unsqueeze(2).expand(b, h, n_win, p, d)
        vp = v[:, :, :p].unsqueeze(2).expand(b, h, n_win, p, d)
        kw, vw = torch.cat([kp, kw], dim=3), torch.cat([vp, vw], dim=3)
    # windows folded into the head dim: 4-D sdpa takes the fused CPU/GPU kernels, 5-D the slow math path
    keys = kw.shape[3]
    qw, kw, vw = (t.reshape(b, h * n_win, -1, d) for t in (qw, kw, vw))
    mask = _key_mask(grid, window, p, q.device)
    if mask is not None:
        mask = mask.reshape(1, 1, n_win, 1, keys).expand(1, h, n_win, 1, keys).reshape(1, h * n_win, 1, keys)
    out_patch = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=mask, scale=scale)
    out_patch = out_patch.reshape(b, h, n_win, -1, d)
    out_patch = _from_windows(out_patch, grid, window)
    if not p:
        return out_patch
    out_prefix = F.scaled_dot_product_attention(q[:, :, :p], k, v, scale=scale)
    return torch.cat([out_prefix, out_patch], dim=2)


class WindowAttention(torch.nn.Module):
    def __init__(self, scale: float, grid: tuple[int, int], num_prefix: int, window: int):
        super().__init__()
        self.scale, self.grid, self.num_prefix, self.window = scale, tuple(grid), num_prefix, window

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return window_attention(q, k, v, self.scale, self.grid, self.num_prefix, self.window)

    def extra_repr(self) -> str:
        return f"window={self.window}, grid={self.grid}, num_prefix={self.num_prefix}"
