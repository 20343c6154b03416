import math

import pytest
import torch

from jetvit_compile.attention import pooled_window_attention


def _slow_reference(q, k, v, scale, grid, prefix, window, pool):
    """Token by token: each patch query sees prefix keys, its window, and every pooled cell with
    +log(the cell's tokens outside that window); a cell wholly inside the window is left out."""
    b, h, n, d = q.shape
    gh, gw = grid
    rows = torch.arange(gh * gw) // gw
    cols = torch.arange(gh * gw) % gw
    cells = {}
    for i in range(gh * gw):
        cells.setdefault((int(rows[i]) // pool, int(cols[i]) // pool), []).append(prefix + i)
    pk = torch.stack([k[:, :, ix].mean(2) for ix in cells.values()], dim=2)
    pv = torch.stack([v[:, :, ix].mean(2) for ix in cells.values()], dim=2)
    out = torch.softmax(q[:, :, :prefix] @ k.transpose(-2, -1) * scale, -1) @ v
    patch_out = []
    for i in range(gh * gw):
        same = (rows // window == rows[i] // window) & (cols // window == cols[i] // window)
        own = prefix + torch.nonzero(same).flatten()
        outside = [len(set(ix) - set(own.tolist())) for ix in cells.values()]
        pbias = torch.tensor([math.log(c) if c else -math.inf for c in outside])
        keys = torch.cat([k[:, :, :prefix], pk, k[:, :, own]], dim=2)
        vals = torch.cat([v[:, :, :prefix], pv, v[:, :, own]], dim=2)
        bias = torch.cat([torch.zeros(prefix), pbias, torch.zeros(len(own))])
        logits = q[:, :, prefix + i : prefix + i + 1] @ keys.transpose(-2, -1) * scale + bias
        patch_out.append(torch.softmax(logits, -1) @ vals)
    return torch.cat([out, *patch_out], dim=2)


@pytest.mark.parametrize("grid,prefix,window,pool", [((8, 8), 1, 4, 2), ((7, 10), 5, 3, 4), ((6, 6), 0, 6, 3)])
def test_pooled_window_attention_matches_the_token_by_token_reference(grid, prefix, window, pool):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, prefix + grid[0] * grid[1], 4, generator=g) for _ in range(3))
    got = pooled_window_attention(q, k, v, 0.5, grid, prefix, window, pool)
    want = _slow_reference(q, k, v, 0.5, grid, prefix, window, pool)
    assert (got - want).abs().max().item() < 1e-5


def test_pool_of_one_on_a_single_window_is_exactly_full_attention():
    """pool 1 makes each cell one token, and every cell lies inside the one window: each drops out, so
    every key counts once and the result is full attention."""
    q, k, v = (torch.randn(1, 2, 1 + 16, 4) for _ in range(3))
    got = pooled_window_attention(q, k, v, 0.5, (4, 4), 1, 4, 1)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.5)
    assert torch.allclose(got, want, atol=1e-5)


def test_pooled_cells_of_the_query_window_drop_out_and_partial_cells_count_their_outside_tokens():
    from jetvit_compile.attention.window_pooled import pooled_bias

    bias = pooled_bias((6, 6), 3, 2)  # windows of 3 cut cells of 2: cell (1, 1) spans rows/cols 2-3
    assert bias.shape == (4, 9)
    assert bias[0, 0] == float("-inf")  # cell rows 0-1 x cols 0-1, inside window 0
    assert torch.isclose(bias[0, 4], torch.tensor(math.log(3)))  # 4 tokens, 1 inside window 0
    assert torch.isclose(bias[3, 0], torch.tensor(math.log(4)))  # far from window 3
