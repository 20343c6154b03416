import pytest
import torch

from jetvit_compile.attention import LearnedQKAttention, build_attention
from jetvit_compile.layout import parse_choice
from jetvit_compile.sites import AttentionSite

SITE = AttentionSite(0, "n", "sdpa", 4, 8, 1 + 36, 1, (6, 6), 8 ** -0.5)


def _qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, 37, 8, generator=g) for _ in range(3)]


@pytest.mark.parametrize("choice", ["window:4", "window:4+pool:2", "window:4+pool:2+route:2",
                                    "window:4+pool:2+route:2+global:3", "window:4+pool:2+full:1.3"])
@pytest.mark.parametrize("rank", [None, 0, 3])
def test_fresh_learned_correction_equals_the_training_free_choice_bit_for_bit(choice, rank):
    suffix = "+learned" if rank is None else f"+learned:{rank}"
    q, k, v = _qkv()
    learned = build_attention(parse_choice(choice + suffix), SITE)
    assert learned.state_dict(), "the learned choice has parameters"
    assert torch.equal(learned(q, k, v), build_attention(parse_choice(choice), SITE)(q, k, v))


def test_temperature_scales_each_heads_logits():
    q, k, v = _qkv(1)
    block = build_attention(parse_choice("window:4+pool:2+learned:0"), SITE)
    with torch.no_grad():
        block.temperature[2] = 1.5
    want = build_attention(parse_choice("window:4+pool:2"), SITE)(q * torch.tensor([1, 1, 1.5, 1]).view(1, 4, 1, 1),
                                                                  k, v)
    assert torch.allclose(block(q, k, v), want, atol=1e-6)
    assert not torch.allclose(block(q, k, v)[:, 2], build_attention(parse_choice("window:4+pool:2"), SITE)(q, k, v)[:, 2])


def test_low_rank_update_changes_q_and_k_per_head():
    q, k, v = _qkv(2)
    seen = {}
    inner = build_attention(parse_choice("window:4"), SITE)
    inner.register_forward_pre_hook(lambda m, args: seen.update(q=args[0], k=args[1]))
    block = LearnedQKAttention(inner, num_heads=4, head_dim=8, rank=2)
    torch.nn.init.normal_(block.up)
    block(q, k, v)
    (q_down, k_down), (q_up, k_up) = block.down[:, 0], block.up[:, 0]
    assert torch.allclose(seen["q"], q + q @ q_down @ q_up, atol=1e-5)
    assert torch.allclose(seen["k"], k + k @ k_down @ k_up, atol=1e-5)


def test_building_a_block_leaves_the_global_random_state_alone():
    torch.manual_seed(3)
    a = torch.rand(1)
    torch.manual_seed(3)
    build_attention(parse_choice("window:4+learned"), SITE)
    assert torch.equal(torch.rand(1), a)
