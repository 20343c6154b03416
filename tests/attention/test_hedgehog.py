import torch

from jetvit_compile.attention import HedgehogAttention, HedgehogFeatureMap, feature_linear_attention, full_attention


def _qkv(tokens, heads=2, dim=4, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, tokens, dim, generator=g) for _ in range(3)]


def test_fresh_block_is_linear_attention_over_two_sided_softmax_features():
    """The init claim: W = I, so phi(x) = [softmax(x), softmax(-x)]; the zero-init conv adds nothing."""
    q, k, v = _qkv(1 + 12)
    block = HedgehogAttention(num_heads=2, head_dim=4, grid=(3, 4), num_prefix=1)
    got = block(q, k, v)
    phi = lambda x: torch.cat([x.softmax(-1), (-x).softmax(-1)], -1)  # noqa: E731
    want = torch.empty_like(got)
    for i in range(13):  # token by token: weights phi(q_i)·phi(k_j), normalised over j
        w = (phi(q)[:, :, i : i + 1] * phi(k)).sum(-1)
        want[:, :, i] = (w.unsqueeze(-1) * v).sum(2) / (w.sum(-1, keepdim=True) + 1e-6)
    assert (got - want).abs().max().item() < 1e-5


def test_feature_maps_are_per_head_and_positive():
    fmap = HedgehogFeatureMap(num_heads=3, head_dim=4, features=5)
    torch.nn.init.normal_(fmap.weight)
    q, k = torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 4)
    phi_q, phi_k = fmap(q, k)
    assert phi_q.shape == phi_k.shape == (2, 3, 7, 10) and (phi_q > 0).all() and (phi_k > 0).all()
    assert torch.allclose(phi_q[..., :5].sum(-1), torch.ones(2, 3, 7))
    assert torch.allclose(phi_q[:, 1, :, :5], torch.softmax(q[:, 1] @ fmap.weight[0, 0, 1], -1), atol=1e-6)
    assert torch.allclose(phi_k[:, 2, :, 5:], torch.softmax(-k[:, 2] @ fmap.weight[1, 0, 2], -1), atol=1e-6)


def test_attention_weights_are_what_the_block_computes():
    q, k, v = _qkv(1 + 12, seed=1)
    block = HedgehogAttention(num_heads=2, head_dim=4, grid=(3, 4), num_prefix=1)
    torch.nn.init.normal_(block.feature_map.weight)
    weights = block.attention_weights(q, k)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 13), atol=1e-5)
    assert torch.allclose(weights @ v, feature_linear_attention(*block.feature_map(q, k), v), atol=1e-5)
    assert torch.allclose(block.attention_weights(q[:, :, 3:5], k), weights[:, :, 3:5], atol=1e-6), "sampled queries"


def test_learned_maps_can_reproduce_softmax_attention_better_than_the_init():
    """The point of the block: fitting the maps to softmax's weights must move the output toward full attention."""
    torch.manual_seed(0)
    q, k, v = _qkv(1 + 16, heads=2, dim=8, seed=2)
    q, k = q * 2, k * 2
    block = HedgehogAttention(num_heads=2, head_dim=8, grid=(4, 4), num_prefix=1)
    target_w = torch.softmax(q @ k.transpose(-1, -2) * 8 ** -0.5, -1)
    target = full_attention(q, k, v, 8 ** -0.5)
    before = (block(q, k, v) - target).square().mean().item()
    opt = torch.optim.Adam(block.feature_map.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        loss = -(target_w * block.attention_weights(q, k).clamp_min(1e-9).log()).sum(-1).mean()
        loss.backward()
        opt.step()
    after = (block(q, k, v) - target).square().mean().item()
    assert after < 0.5 * before, (before, after)
