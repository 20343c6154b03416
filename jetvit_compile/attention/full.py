"""Full (softmax) attention: the original computation every variant is compared with."""
from __future__ import annotations

import torch

from .core import attend


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(q kᵀ · scale) v`` over ``[B, H, N, D]`` tensors."""
    return attend(q, k, v, scale, full=True)


class FullAttention(torch.nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return full_attention(q, k, v, self.scale)
