import math

import pytest
import torch
import torch.nn.functional as F

from jetvit_compile.attention import pooled_window_attention, routed_window_attention


def _slow_reference(q, k, v, scale, grid, prefix, window, pool, route, global_tokens=0, group=None):
    """Token by token. Per batch item and head, the ``global_tokens`` patch tokens with the largest logit
    for the mean patch query are global: every patch query reads them exactly (unless they lie in its
    window, which it reads anyway) and no cell pools them. Each window ranks the cells by its mean query's
    logit on the cell's mean key plus log(the cell's pooled tokens outside the window); a patch query sees
    the prefix keys, its window's tokens, the global tokens, the tokens outside its window of the window's
    top ``route`` cells, and every other cell pooled with +log(its pooled tokens outside the window); a
    cell with no such token is left out. With ``group``, the cells are ranked by the mean query of the
    query's ``group x group`` block instead of its window's."""
    b, h, n, d = q.shape
    gh, gw = grid
    rows, cols = torch.arange(gh * gw) // gw, torch.arange(gh * gw) % gw
    all_cells = {}
    for i in range(gh * gw):
        all_cells.setdefault((int(rows[i]) // pool, int(cols[i]) // pool), []).append(prefix + i)
    all_cells = list(all_cells.values())
    out = torch.zeros_like(q)
    out[:, :, :prefix] = torch.softmax(q[:, :, :prefix] @ k.transpose(-2, -1) * scale, -1) @ v
    for bi in range(b):
        for hi in range(h):
            score = k[bi, hi, prefix:] @ q[bi, hi, prefix:].mean(0)
            picked = set((prefix + score.topk(min(global_tokens, gh * gw)).indices).tolist() if global_tokens else [])
            cells = [[t for t in ix if t not in picked] for ix in all_cells]
            pk = torch.stack([k[bi, hi, ix].mean(0) if ix else torch.zeros(d) for ix in cells])
            pv = torch.stack([v[bi, hi, ix].mean(0) if ix else torch.zeros(d) for ix in cells])
            for i in range(gh * gw):
                same = (rows // window == rows[i] // window) & (cols // window == cols[i] // window)
                own = (prefix + torch.nonzero(same).flatten()).tolist()
                outside = [[t for t in ix if t not in own] for ix in cells]
                pbias = torch.tensor([math.log(len(o)) if o else -math.inf for o in outside])
                size = group or window
                mine = (rows // size == rows[i] // size) & (cols // size == cols[i] // size)
                q_mean = q[bi, hi, prefix + torch.nonzero(mine).flatten()].mean(0)
                ranked = (q_mean @ pk.T * scale + pbias).topk(min(route, len(cells))).indices
                top = set(ranked.tolist() if route else [])
                routed = [t for c in sorted(top) for t in outside[c]] + sorted(t for t in picked if t not in own)
                kept = [c for c in range(len(cells)) if c not in top]
                keys = torch.cat([k[bi, hi, :prefix], pk[kept], k[bi, hi, routed], k[bi, hi, own]])
                vals = torch.cat([v[bi, hi, :prefix], pv[kept], v[bi, hi, routed], v[bi, hi, own]])
                bias = torch.cat([torch.zeros(prefix), pbias[kept], torch.zeros(len(routed) + len(own))])
                weights = torch.softmax(q[bi, hi, prefix + i] @ keys.T * scale + bias, -1)
                out[bi, hi, prefix + i] = weights @ vals
    return out


@pytest.mark.parametrize("grid,prefix,window,pool,route,global_tokens,group", [
    ((8, 8), 1, 4, 2, 3, 0, None),  # windows aligned with cells
    ((7, 10), 5, 3, 4, 2, 0, None),  # windows cut cells, cells cut by the grid's edge, padding in both
    ((9, 9), 0, 4, 3, 1, 0, None),
    ((7, 10), 5, 3, 4, 0, 6, None),  # global tokens alone
    ((7, 10), 1, 3, 4, 2, 6, None),  # global tokens inside routed cells count once
    ((8, 8), 1, 4, 2, 3, 40, None),  # most of the grid global: whole cells emptied
    ((8, 8), 1, 4, 2, 3, 0, 2),  # routed per 2x2 block of queries
    ((7, 10), 5, 4, 3, 2, 6, 2),  # ... with padding (a group of padding only), global tokens
    ((9, 9), 0, 6, 2, 4, 0, 3),
])
def test_routed_window_attention_matches_the_token_by_token_reference(grid, prefix, window, pool, route,
                                                                      global_tokens, group):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, prefix + grid[0] * grid[1], 4, generator=g) for _ in range(3))
    got = routed_window_attention(q, k, v, 0.5, grid, prefix, window, pool, route, global_tokens, group)
    want = _slow_reference(q, k, v, 0.5, grid, prefix, window, pool, route, global_tokens, group)
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("route,global_tokens,window,group", [(10**6, 0, 3, None), (0, 10**6, 3, None),
                                                            (10**6, 30, 3, None), (10**6, 0, 4, 2),
                                                            (10**6, 30, 4, 2)])
def test_reading_every_token_exactly_is_full_attention(route, global_tokens, window, group):
    """Every cell read token by token or every token global, none pooled, each counted once: full attention."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 5 + 7 * 10, 8, generator=g) for _ in range(3))
    got = routed_window_attention(q, k, v, 0.5, (7, 10), 5, window, 4, route, global_tokens, group)
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


def test_global_tokens_take_the_attention_sinks_out_of_their_cells():
    """A few tokens with large keys (the attention sinks of DINOv2-class models) that pooling dilutes:
    reading them as global tokens removes most of the pooled error."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 1 + 16 * 16, 8, generator=g) for _ in range(3))
    q = q + 1.0
    sinks = torch.tensor([1 + 5, 1 + 77, 1 + 140, 1 + 250])
    k[:, :, sinks] += 3.0
    v[:, :, sinks] *= 4.0
    full = F.scaled_dot_product_attention(q, k, v, scale=0.5)
    pooled = (pooled_window_attention(q, k, v, 0.5, (16, 16), 1, 8, 4) - full).abs().mean()
    with_global = (routed_window_attention(q, k, v, 0.5, (16, 16), 1, 8, 4, 0, 4) - full).abs().mean()
    assert with_global < 0.5 * pooled
