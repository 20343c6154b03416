import pytest
import torch
from hf_models import export

import jetvit_compile as jc
from jetvit_compile.errors import UnsupportedModelError, UsageError

# name -> (sites, heads, head_dim, tokens at 224 px, grid, prefix tokens, RoPE, form)
EXPECTED = {
    "dinov2_s": (12, 6, 64, 257, (16, 16), 1, False, "sdpa"),
    "dinov2_s_eager": (12, 6, 64, 257, (16, 16), 1, False, "matmul_softmax"),
    "dinov2_b": (12, 12, 64, 257, (16, 16), 1, False, "sdpa"),
    "dinov2_s_reg": (12, 6, 64, 261, (16, 16), 5, False, "sdpa"),
    "dinov3_s": (12, 6, 64, 201, (14, 14), 5, True, "sdpa"),
    "depth_anything_s": (12, 6, 64, 257, (16, 16), 1, False, "sdpa"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sites_found_with_exact_facts(name):
    n_sites, heads, head_dim, tokens, grid, prefix, rope, form = EXPECTED[name]
    sites = jc.inspect(export(name)[0])
    assert len(sites) == n_sites
    for i, s in enumerate(sites):
        assert s.index == i
        got = (s.num_heads, s.head_dim, s.tokens, s.grid, s.num_prefix_tokens, s.has_rope, s.form)
        assert got == (heads, head_dim, tokens, grid, prefix, rope, form)
        assert s.scale == pytest.approx(head_dim**-0.5)


def test_decomposed_graph_bmm_chain_is_found():
    ep, _ = export("dinov2_s")
    sites = jc.inspect(ep.run_decompositions())
    assert len(sites) == 12
    assert {(s.form, s.num_heads, s.tokens, s.grid) for s in sites} == {("matmul_softmax", 6, 257, (16, 16))}
    assert sites[0].scale == pytest.approx(0.125)


def test_non_square_input_gives_non_square_grid():
    sites = jc.inspect(export("dinov2_tiny", 518, 1036)[0])
    assert [s.grid for s in sites] == [(37, 74)] * 2 and sites[0].tokens == 1 + 37 * 74


class _NoAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return self.conv(x).relu().mean(dim=(2, 3))


class _TokensOnly(torch.nn.Module):
    """Attention over tokens that did not come from a patch convolution: the grid cannot be inferred."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(32, 96)

    def forward(self, tokens):
        b, n, _ = tokens.shape
        q, k, v = self.qkv(tokens).reshape(b, n, 3, 2, 16).permute(2, 0, 3, 1, 4)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def test_model_without_attention_is_refused_clearly():
    ep = torch.export.export(_NoAttention(), (torch.randn(1, 3, 32, 32),))
    with pytest.raises(UnsupportedModelError, match="no attention found"):
        jc.inspect(ep)


def test_grid_that_cannot_be_inferred_says_how_to_pass_it():
    ep = torch.export.export(_TokensOnly(), (torch.randn(1, 1 + 6 * 8, 32),))
    with pytest.raises(UnsupportedModelError, match=r"grid=\("):
        jc.inspect(ep)
    sites = jc.inspect(ep, grid=(6, 8))
    assert len(sites) == 1 and sites[0].num_prefix_tokens == 1 and sites[0].num_heads == 2


def test_wrong_explicit_grid_is_refused():
    ep = torch.export.export(_TokensOnly(), (torch.randn(1, 20, 32),))
    with pytest.raises(UnsupportedModelError, match="fewer than the 5x5 patch grid"):
        jc.inspect(ep, grid=(5, 5))


def test_module_instead_of_exported_program_is_a_usage_error():
    with pytest.raises(UsageError, match="torch.export.export"):
        jc.inspect(_NoAttention())


class _FlashForCpu(torch.nn.Module):
    """A graph as exported after CPU decompositions keep the fused kernel: the tuple-returning variant."""

    def __init__(self):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 32, 4, stride=4)
        self.qkv = torch.nn.Linear(32, 96)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        b, n, _ = t.shape
        q, k, v = self.qkv(t).reshape(b, n, 3, 2, 16).permute(2, 0, 3, 1, 4)
        out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=0.3)[0]
        return out.sum()


def test_tuple_returning_flash_variant_is_found_and_rewritten():
    x = torch.randn(1, 3, 16, 16)
    ep = torch.export.export(_FlashForCpu(), (x,))
    (site,) = jc.inspect(ep)
    assert (site.form, site.grid, site.num_prefix_tokens, site.scale) == ("sdpa_flash", (4, 4), 0, 0.3)
    new, summary = jc.rewrite(ep, "window:4")
    assert summary["to_window"] == 1
    assert torch.allclose(new.module()(x), ep.module()(x), atol=1e-4)
