"""ReLU linear attention: ``relu(q_i) Σ_j relu(k_j)ᵀ v_j / (relu(q_i) Σ_j relu(k_j) + eps)``.

Cost grows as N·D² instead of N²·D. The softmax scale cancels between numerator and denominator,
so it is not an argument. Computed in float32 whatever the input dtype: the sums over N tokens
overflow half precision at high resolution.
"""
from __future__ import annotations

import torch

EPS = 1e-6


def relu_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    dtype = q.dtype
    q, k, v = torch.relu(q.float()), torch.relu(k.float()), v.float()
    kv = torch.matmul(k.transpose(-2, -1), v)  # [B, H, D, D]
    k_sum = k.sum(dim=-2, keepdim=True)  # [B, H, 1, D]
    num = torch.matmul(q, kv)
    den = (q * k_sum).sum(dim=-1, keepdim=True) + eps
    return (num / den).to(dtype)


class ReLULinearAttention(torch.nn.Module):
    def __init__(self, eps: float = EPS):
        super().__init__()
        self.eps = eps

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return relu_linear_attention(q, k, v, self.eps)
