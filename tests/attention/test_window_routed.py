import math

import pytest
import torch
import torch.nn.functional as F

from jetvit_compile.attention import pooled_window_attention, routed_window_attention


def _slow_reference(q, k, v, scale, grid, prefix, window, pool, route):
    """Token by token. Each window ranks the cells by its mean query's logit on the cell's mean key plus
    log(the cell's tokens outside the window); a patch query sees the prefix keys, its window's tokens,
    the tokens outside its window of the window's top ``route`` cells, and every other cell pooled with
    +log(its tokens outside the window); a cell wholly inside the window is left out."""
    b, h, n, d = q.shape
    gh, gw = grid
    rows, cols = torch.arange(gh * gw) // gw, torch.arange(gh * gw) % gw
    cells = {}
    for i in range(gh * gw):
        cells.setdefault((int(rows[i]) // pool, int(cols[i]) // pool), []).append(prefix + i)
    cells = list(cells.values())
    pk = torch.stack([k[:, :, ix].mean(2) for ix in cells], dim=2)
    pv = torch.stack([v[:, :, ix].mean(2) for ix in cells], dim=2)
    out = torch.zeros_like(q)
    out[:, :, :prefix] = torch.softmax(q[:, :, :prefix] @ k.transpose(-2, -1) * scale, -1) @ v
    for i in range(gh * gw):
        same = (rows // window == rows[i] // window) & (cols // window == cols[i] // window)
        own = (prefix + torch.nonzero(same).flatten()).tolist()
        outside = [[t for t in ix if t not in own] for ix in cells]
        pbias = torch.tensor([math.log(len(o)) if o else -math.inf for o in outside])
        for bi in range(b):
            for hi in range(h):
                q_mean = q[bi, hi, own].mean(0)
                top = set((q_mean @ pk[bi, hi].T * scale + pbias).topk(min(route, len(cells))).indices.tolist())
                routed = [t for c in sorted(top) for t in outside[c]]
                kept = [c for c in range(len(cells)) if c not in top]
                keys = torch.cat([k[bi, hi, :prefix], pk[bi, hi, kept], k[bi, hi, routed], k[bi, hi, own]])
                vals = torch.cat([v[bi, hi, :prefix], pv[bi, hi, kept], v[bi, hi, routed], v[bi, hi, own]])
                bias = torch.cat([torch.zeros(prefix), pbias[kept], torch.zeros(len(routed) + len(own))])
                weights = torch.softmax(q[bi, hi, prefix + i] @ keys.T * scale + bias, -1)
                out[bi, hi, prefix + i] = weights @ vals
    return out


@pytest.mark.parametrize("grid,prefix,window,pool,route", [
    ((8, 8), 1, 4, 2, 3),  # windows aligned with cells
    ((7, 10), 5, 3, 4, 2),  # windows cut cells, cells cut by the grid's edge, padding in both
    ((9, 9), 0, 4, 3, 1),
])
def test_routed_window_attention_matches_the_token_by_token_reference(grid, prefix, window, pool, route):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, prefix + grid[0] * grid[1], 4, generator=g) for _ in range(3))
    got = routed_window_attention(q, k, v, 0.5, grid, prefix, window, pool, route)
    want = _slow_reference(q, k, v, 0.5, grid, prefix, window, pool, route)
    assert (got - want).abs().max().item() < 1e-5


def test_routing_every_cell_is_exactly_full_attention():
    """Every cell read token by token, none pooled, each token counted once: full attention."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 5 + 7 * 10, 8, generator=g) for _ in range(3))
    got = routed_window_attention(q, k, v, 0.5, (7, 10), 5, 3, 4, 10**6)
    want = F.scaled_dot_product_attention(q, k, v, scale=0.5)
    assert (got - want).abs().max().item() < 1e-5


def test_routing_moves_the_output_towards_full_attention():
    """Reading the most attended cells exactly removes part of the pooled error, on peaked attention."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 1 + 16 * 16, 8, generator=g) * 2 for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v, scale=0.5)
    pooled = (pooled_window_attention(q, k, v, 0.5, (16, 16), 1, 8, 4) - full).abs().mean()
    routed = (routed_window_attention(q, k, v, 0.5, (16, 16), 1, 8, 4, 4) - full).abs().mean()
    assert routed < 0.7 * pooled
