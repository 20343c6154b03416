import pytest
import torch

from jetvit_compile.attention import full_attention, window_attention
from jetvit_compile.attention.window import _from_windows, _to_windows, tiling_window
from jetvit_compile.search import default_variants


def _qkv(tokens, heads=3, dim=8, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, tokens, dim, generator=g) for _ in range(3)]


def _masked_reference(q, k, v, scale, grid, prefix, window):
    """Independent reference: full attention with an explicit N x N mask of who may see whom."""
    gh, gw = grid
    rows = torch.arange(gh * gw) // gw // window
    cols = torch.arange(gh * gw) % gw // window
    same = (rows[:, None] == rows[None, :]) & (cols[:, None] == cols[None, :])
    n = prefix + gh * gw
    allowed = torch.ones(n, n, dtype=torch.bool)
    allowed[prefix:, prefix:] = same
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)


@pytest.mark.parametrize("grid,prefix", [((16, 16), 1), ((5, 7), 5), ((4, 4), 0), ((37, 74), 1)])
def test_window_covering_grid_is_full_attention(grid, prefix):
    q, k, v = _qkv(prefix + grid[0] * grid[1])
    full = full_attention(q, k, v, 0.125)
    win = window_attention(q, k, v, 0.125, grid, prefix, max(grid))
    assert (full - win).abs().max().item() <= 1e-5


@pytest.mark.parametrize("grid,prefix,window", [((16, 16), 1, 4), ((5, 7), 5, 3), ((9, 9), 0, 4), ((7, 11), 1, 14)])
def test_window_matches_explicit_mask(grid, prefix, window):
    q, k, v = _qkv(prefix + grid[0] * grid[1], seed=3)
    got = window_attention(q, k, v, 0.3, grid, prefix, window)
    want = _masked_reference(q, k, v, 0.3, grid, prefix, window)
    err = (got - want).abs()
    assert err.max().item() <= 1e-5, f"worst at {divmod(int(err.argmax()), err.shape[-1])}: {err.max().item()}"


def test_window_of_one_without_prefix_returns_v():
    q, k, v = _qkv(12)
    assert torch.allclose(window_attention(q, k, v, 1.0, (3, 4), 0, 1), v, atol=1e-6)


def test_windows_round_trip_with_padding():
    x = torch.randn(1, 2, 5 * 7, 3)
    assert torch.equal(_from_windows(_to_windows(x, (5, 7), 3), (5, 7), 3), x)


@pytest.mark.parametrize("grid, window", [
    ((37, 37), 19),  # 518 px: 2x2 windows pad 37 -> 38 (window 14 pads to 42)
    ((74, 74), 15),  # 1036 px: 5x5 windows pad 74 -> 75 (window 14 pads to 84)
    ((24, 24), 12),  # divides: no padding; the larger of 8 and 12
    ((16, 16), 8),  # 16 itself would be one window, i.e. full attention
    ((4, 4), 2),  # no size in 8..20 fits under the grid: two windows per side
])
def test_tiling_window_pads_least(grid, window):
    assert tiling_window(grid) == window
    padded = lambda w: -(-grid[0] // w) * w * -(-grid[1] // w) * w  # noqa: E731
    assert all(padded(window) <= padded(w) for w in range(8, min(21, max(grid))))


def test_default_ladder_uses_the_tiling_window():
    assert default_variants((74, 74)) == ["window:15+pool:4", "window:15+cluster:128", "window:15+cluster:256",
                                          "window:15+pool:4+route:32+global:128", "full"]
    # fewer pooled cells than clusters (518 px: 100 cells): routed cells and global tokens instead
    assert default_variants((37, 37)) == ["window:19+pool:4", "window:19+pool:4+route:8",
                                          "window:19+pool:4+route:8+global:128", "window:19+pool:4+route:32+global:128",
                                          "full"]
    assert default_variants(None)[0] == "window:14+pool:4"  # no grid known: the usual window
