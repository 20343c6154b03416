import math

import pytest
import torch

from jetvit_compile.attention import pooled_window_attention


def _slow_reference(q, k, v, scale, grid, prefix, window, pool):
    """Token by token: each patch query sees prefix keys, pooled cells (+log size) and its window."""
    b, h, n, d = q.shape
    gh, gw = grid
    rows = torch.arange(gh * gw) // gw
    cols = torch.arange(gh * gw) % gw
    cells = {}
    for i in range(gh * gw):
        cells.setdefault((int(rows[i]) // pool, int(cols[i]) // pool), []).append(prefix + i)
    pk = torch.stack([k[:, :, ix].mean(2) for ix in cells.values()], dim=2)
    pv = torch.stack([v[:, :, ix].mean(2) for ix in cells.values()], dim=2)
    pbias = torch.tensor([math.log(len(ix)) for ix in cells.values()])
    out = torch.softmax(q[:, :, :prefix] @ k.transpose(-2, -1) * scale, -1) @ v
    patch_out = []
    for i in range(gh * gw):
        same = (rows // window == rows[i] // window) & (cols // window == cols[i] // window)
        own = prefix + torch.nonzero(same).flatten()
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


def test_pool_of_one_on_a_single_window_is_full_attention_with_duplicated_keys():
    """pool 1 makes each pooled cell one token with weight log(1) = 0: the window's keys appear twice,
    which doubles their weight uniformly, so softmax over [all, all] equals softmax over [all]."""
    q, k, v = (torch.randn(1, 2, 1 + 16, 4) for _ in range(3))
    got = pooled_window_attention(q, k, v, 0.5, (4, 4), 1, 4, 1)
    patch_only = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.5)
    # prefix key is counted once, patch keys twice: compare with the explicit double-count
    logits = (q @ k.transpose(-2, -1)) * 0.5
    w = torch.exp(logits - logits.max(-1, keepdim=True).values)
    w[..., 1:] *= 2
    want = (w / w.sum(-1, keepdim=True)) @ v
    assert torch.allclose(got[:, :, 1:], want[:, :, 1:], atol=1e-5)
    assert torch.allclose(got[:, :, :1], patch_only[:, :, :1], atol=1e-6)
