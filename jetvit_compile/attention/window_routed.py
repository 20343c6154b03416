"""Pooled-window attention that also routes each window to its most attended cells, read token by token.

Pooled keys lose what a cell's tokens say one by one: a query's softmax weights inside a cell collapse to
the cell's mean value (bench/results/pooled_error_1036.md: giving the pooled cells their exact
within-cell weighting recovers most of the fidelity lost at the sensitive blocks). Here each window
ranks the pooled cells by the logit its mean query gives them (plus log of the cell's tokens outside the
window, the pooled bias), and reads its top ``route`` cells exactly: their tokens join the window's keys
and their pooled token drops out, so every token still counts once. Tokens of a routed cell that lie in
the window itself (or in the grid's padding) are masked. The ranking is per window and head, computed from
the block's own q and k: nothing is learned. TopK and Gather in both IRs; cost grows by
``route * pool²`` keys per window. Global tokens (:mod:`.global_tokens`, ``global_tokens`` keys shared by
every window) can be added to it, or used without routing (``route=0``).
"""
from __future__ import annotations

import math

import torch

from .core import attend
from .global_tokens import select_global_tokens
from .window import (_from_windows, _padding_bias, _real_tokens, _tile_count, _tile_of, _to_windows,
                     with_prefix_rows)
from .window_pooled import outside_counts, pooled_bias


def routed_token_bias(grid: tuple[int, int], window: int, pool: int) -> torch.Tensor:
    """``[nWin, nCells, pool²]``: 0 for a cell's token that is real and outside the window, -inf otherwise.
    Built from shapes alone: a constant in exported graphs."""
    gh, gw = grid
    token = torch.arange(gh * gw, dtype=torch.float32).reshape(1, 1, -1, 1)
    cell_tokens = _to_windows(token + 1, grid, pool)[0, 0, :, :, 0].long() - 1  # -1: padding
    owner = torch.where(cell_tokens >= 0, _tile_of(grid, window)[cell_tokens.clamp_min(0)], -1)  # [nCells, pool²]
    keep = (owner[None] != torch.arange(_tile_count(grid, window))[:, None, None]) & (cell_tokens >= 0)[None]
    return torch.zeros(keep.shape).masked_fill(~keep, -math.inf)


def routed_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    grid: tuple[int, int],
    num_prefix: int,
    window: int,
    pool: int,
    route: int,
    global_tokens: int = 0,
    group: int | None = None,
) -> torch.Tensor:
    """Pooled-window attention with the top ``route`` cells (0: none) read token by token, and
    ``global_tokens`` tokens per head (0: none; :mod:`.global_tokens`) read exactly by every window. The
    cells are ranked for each window, or with ``group`` (dividing ``window``) for each ``group x group``
    block of a window's queries: finer routing, each query's cells nearer its own."""
    b, h, n, d = q.shape
    p = num_prefix
    group = None if group in (None, window) else group
    if group is not None and window % group:
        raise ValueError(f"route group {group} must divide the window {window}")
    qp, kp, vp = (t[:, :, p:] for t in (q, k, v))
    pool_bias = pooled_bias(grid, window, pool).to(q.device, q.dtype)  # [nWin, cells]
    n_win, cells, p2 = pool_bias.shape[0], pool_bias.shape[1], pool * pool
    shared_k, shared_v, shared_bias = [k[:, :, :p]], [v[:, :, :p]], []
    if global_tokens:
        picked = select_global_tokens(qp, kp, vp, grid, window, pool, global_tokens)
        kp, vp = kp * picked.keep.unsqueeze(-1), vp * picked.keep.unsqueeze(-1)
        # a cell's pooled token stands for its tokens outside the window that are not global tokens
        outside = outside_counts(grid, window, pool).to(q.device, q.dtype)
        pool_bias = torch.log((outside - picked.outside_selected).clamp_min(0))
        keep_cells = _to_windows(picked.keep.unsqueeze(-1), grid, pool)  # [B, H, cells, pool², 1]
        cell_size = keep_cells.sum(3).clamp_min(1)  # [B, H, cells, 1]
    else:
        cell_size = _real_tokens(grid, pool, q.device).sum(1).to(q.dtype)[:, None]
    # the cells' tokens (routed cells are read from these) and their means (the pooled keys and values)
    k_cells, v_cells = (_to_windows(t, grid, pool) for t in (kp, vp))  # [B, H, cells, pool², D]
    k_pool, v_pool = k_cells.sum(3) / cell_size, v_cells.sum(3) / cell_size
    qw, kw, vw = (_to_windows(t, grid, window, group) for t in (qp, k[:, :, p:], v[:, :, p:]))
    w2 = qw.shape[3]
    n_groups = (window // group) ** 2 if group else 1  # routing units per window, G queries each
    g2 = w2 // n_groups
    pool_bias = pool_bias.expand(b, h, n_win, cells).unsqueeze(3).expand(b, h, n_win, n_groups, cells)
    routed_k, routed_v, routed_bias = [], [], []
    if route:
        route = min(route, cells)
        # rank the cells by each group's mean logit (logits are linear in q: the mean query's logit)
        real = _real_tokens(grid, window, q.device, group).reshape(n_win, n_groups, g2).sum(2).to(q.dtype)
        q_mean = qw.reshape(b, h, n_win, n_groups, g2, d).sum(4) / real[..., None]  # [B, H, nWin, groups, D]
        logits = q_mean @ k_pool.unsqueeze(2).transpose(-2, -1) * scale + pool_bias
        top = logits.topk(route, dim=-1).indices  # [B, H, nWin, groups, route]
        # the routed cells' tokens, gathered from every (batch, head)'s cell tiles
        flat = (top + (torch.arange(b * h, device=q.device) * cells).reshape(b, h, 1, 1, 1)).reshape(-1)
        routed_k, routed_v = ([t.reshape(-1, p2, d).index_select(0, flat).reshape(b, h, n_win, n_groups, route * p2, d)]
                              for t in (k_cells, v_cells))
        token_bias = routed_token_bias(grid, window, pool).to(q.device, q.dtype).reshape(n_win * cells, p2)
        win_offset = (torch.arange(n_win, device=q.device) * cells).reshape(1, 1, n_win, 1, 1)
        bias = token_bias.index_select(0, (top + win_offset).reshape(-1)).reshape(b, h, n_win, n_groups, route * p2)
        if global_tokens:  # a global token is read once, as a global token
            keep = keep_cells.reshape(-1, p2).index_select(0, flat)
            bias = bias + torch.log(keep.reshape(b, h, n_win, n_groups, route * p2))
        routed_bias = [bias]
        # a routed cell is read token by token: its pooled stand-in drops out
        pool_bias = pool_bias.scatter(-1, top, torch.full(top.shape, -math.inf, dtype=q.dtype, device=q.device))
    shared_k.append(k_pool)
    shared_v.append(v_pool)
    shared_bias.append(pool_bias)
    if global_tokens:
        shared_k.append(picked.k)
        shared_v.append(picked.v)
        shared_bias.append(picked.bias.unsqueeze(3).expand(b, h, n_win, n_groups, picked.k.shape[2]))
    shared_k, shared_v = torch.cat(shared_k, dim=2), torch.cat(shared_v, dim=2)
    s = shared_k.shape[2]
    window_bias = _padding_bias(grid, window, q.device, group).to(q.dtype)
    prefix_bias = torch.zeros(b, h, n_win, n_groups, p, dtype=q.dtype, device=q.device)
    if group is None:
        # windows folded into the head dim: 4-D sdpa takes the fused kernels
        keys = [shared_k.unsqueeze(2).expand(b, h, n_win, s, d)] + [t.squeeze(3) for t in routed_k] + [kw]
        values = [shared_v.unsqueeze(2).expand(b, h, n_win, s, d)] + [t.squeeze(3) for t in routed_v] + [vw]
        bias = torch.cat([prefix_bias] + shared_bias + routed_bias
                         + [window_bias.reshape(1, 1, n_win, 1, w2).expand(b, h, n_win, 1, w2)], dim=4)
        out = attend(qw.reshape(b, h * n_win, w2, d), torch.cat(keys, dim=3).reshape(b, h * n_win, -1, d),
                     torch.cat(values, dim=3).reshape(b, h * n_win, -1, d), scale, bias.reshape(b, h * n_win, 1, -1))
        return with_prefix_rows(q, k, v, scale, p, _from_windows(out.reshape(b, h, n_win, w2, d), grid, window))
    # per group: the window's keys (shared, the window's own tokens) and the group's routed keys, one softmax
    k_win = torch.cat([shared_k.unsqueeze(2).expand(b, h, n_win, s, d), kw], dim=3)
    v_win = torch.cat([shared_v.unsqueeze(2).expand(b, h, n_win, s, d), vw], dim=3)
    win_bias = torch.cat([prefix_bias] + shared_bias
                         + [window_bias.reshape(1, 1, n_win, 1, w2).expand(b, h, n_win, n_groups, w2)], dim=4)
    q_groups = qw.reshape(b, h, n_win, n_groups, g2, d)
    logits_win = (qw @ k_win.transpose(-1, -2) * scale).reshape(b, h, n_win, n_groups, g2, -1) + win_bias.unsqueeze(4)
    parts = [logits_win]
    if route:
        parts.append(q_groups @ routed_k[0].transpose(-1, -2) * scale + routed_bias[0].unsqueeze(4))
    weights = torch.softmax(torch.cat(parts, dim=-1), dim=-1)
    n_keys = logits_win.shape[-1]
    out = weights[..., :n_keys].reshape(b, h, n_win, w2, n_keys) @ v_win
    if route:
        out = out + (weights[..., n_keys:] @ routed_v[0]).reshape(b, h, n_win, w2, d)
    return with_prefix_rows(q, k, v, scale, p, _from_windows(out, grid, window, group))


class RoutedWindowAttention(torch.nn.Module):
    def __init__(self, scale: float, grid: tuple[int, int], num_prefix: int, window: int, pool: int, route: int,
                 global_tokens: int = 0, group: int | None = None):
        super().__init__()
        self.scale, self.grid, self.num_prefix = scale, tuple(grid), num_prefix
        self.window, self.pool, self.route, self.global_tokens, self.group = window, pool, route, global_tokens, group

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return routed_window_attention(q, k, v, self.scale, self.grid, self.num_prefix, self.window, self.pool,
                                       self.route, self.global_tokens, self.group)

    def extra_repr(self) -> str:
        return (f"window={self.window}, pool={self.pool}, route={self.route}, global_tokens={self.global_tokens}, "
                f"group={self.group}, "
                f"grid={self.grid}, num_prefix={self.num_prefix}")
