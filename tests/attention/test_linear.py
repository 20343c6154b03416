import torch
import torch.nn.functional as F

from jetvit_compile.attention import DynamicDepthwiseConv, JetViTAttention, relu_linear_attention


def _qkv(tokens, heads=2, dim=4, batch=2):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, heads, tokens, dim, generator=g) for _ in range(3)]


def test_relu_linear_attention_matches_the_formula_token_by_token():
    q, k, v = _qkv(10)
    got = relu_linear_attention(q, k, v, eps=1e-6)
    rq, rk = q.relu(), k.relu()
    want = torch.empty_like(got)
    for i in range(10):
        w = (rq[:, :, i : i + 1] * rk).sum(-1)  # [B, H, N]: relu(q_i)·relu(k_j)
        want[:, :, i] = (w.unsqueeze(-1) * v).sum(2) / (w.sum(-1, keepdim=True) + 1e-6)
    assert (got - want).abs().max().item() < 1e-5


def test_jetvit_block_starts_as_relu_linear_attention():
    q, k, v = _qkv(1 + 12)
    block = JetViTAttention(num_heads=2, head_dim=4, grid=(3, 4), num_prefix=1)
    assert torch.equal(block(q, k, v), relu_linear_attention(q, k, v))


def test_jetvit_conv_adds_a_per_image_depthwise_conv_on_v_patches():
    torch.manual_seed(0)
    q, k, v = _qkv(1 + 12)
    block = JetViTAttention(num_heads=2, head_dim=4, grid=(3, 4), num_prefix=1)
    torch.nn.init.normal_(block.conv.kernel_mlp[2].weight)
    got = block(q, k, v) - relu_linear_attention(q, k, v)
    assert torch.equal(got[:, :, :1], torch.zeros_like(got[:, :, :1])), "prefix tokens get no conv"
    for b in range(2):  # reference: one image at a time, channel = head * head_dim + d
        v_map = v[b, :, 1:].permute(0, 2, 1).reshape(8, 3, 4)
        kernel = block.conv.kernel_mlp(v_map.mean(dim=(1, 2))).reshape(8, 1, 3, 3)
        conv = F.conv2d(v_map.unsqueeze(0), kernel, padding=1, groups=8)[0]
        want = conv.reshape(2, 4, 12).permute(0, 2, 1)
        assert (got[b, :, 1:] - want).abs().max().item() < 1e-5


def test_dynamic_conv_last_layer_is_zero_initialised():
    conv = DynamicDepthwiseConv(channels=16, kernel_size=3)
    assert not conv.kernel_mlp[2].weight.any() and not conv.kernel_mlp[2].bias.any()
    assert isinstance(conv.kernel_mlp[1], torch.nn.SiLU)
