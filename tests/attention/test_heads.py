import pytest
import torch
import torch.nn.functional as F

from jetvit_compile.attention import HeadSplitAttention, RoutedWindowAttention, build_attention
from jetvit_compile.errors import UsageError
from jetvit_compile.layout import parse_choice
from jetvit_compile.passes.checks import check_choice
from jetvit_compile.sites import AttentionSite


def test_the_named_heads_are_full_attention_and_the_others_the_window_variant():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 6, 1 + 8 * 8, 4, generator=g) for _ in range(3))
    rest = RoutedWindowAttention(0.5, (8, 8), 1, 4, 2, 2, 3)
    got = HeadSplitAttention((5, 1, 2), 6, 0.5, rest)(q, k, v)
    full, windowed = F.scaled_dot_product_attention(q, k, v, scale=0.5), rest(q, k, v)
    torch.testing.assert_close(got[:, [1, 2, 5]], full[:, [1, 2, 5]])
    torch.testing.assert_close(got[:, [0, 3, 4]], windowed[:, [0, 3, 4]])
    assert (windowed[:, [1, 2, 5]] - full[:, [1, 2, 5]]).abs().max() > 1e-3  # the split is not a no-op


def test_full_heads_in_the_layout_syntax_and_site_checks():
    choice = parse_choice("window:15+pool:4+route:32+global:128+full:5.1.2")
    assert choice.full_heads == (1, 2, 5) and str(choice) == "window:15+pool:4+route:32+global:128+full:1.2.5"
    assert parse_choice(str(choice)) == choice
    with pytest.raises(UsageError, match="names a head twice"):
        parse_choice("window:15+full:1.1")
    site = AttentionSite(index=0, name="s", form="sdpa", num_heads=6, head_dim=4, tokens=65, num_prefix_tokens=1,
                         grid=(8, 8), scale=0.5)
    assert check_choice(site, parse_choice("window:4+pool:2+full:1.2.5"), {}) is None
    assert "heads 0-5" in check_choice(site, parse_choice("window:4+full:6"), {})
    assert "for all of them use full" in check_choice(site, parse_choice("window:4+full:0.1.2.3.4.5"), {})
    assert isinstance(build_attention(parse_choice("window:4+full:3"), site), HeadSplitAttention)
