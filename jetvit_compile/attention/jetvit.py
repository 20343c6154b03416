"""The JetViT block: ReLU linear attention plus a squeeze dynamic depthwise convolution on V.

The conv kernel is generated per image (shared by all its tokens) from V average-pooled over the
patch grid, by a 2-layer MLP with SiLU. Its last layer starts at zero, so a fresh block is exactly
ReLU linear attention; distillation then learns the MLP. Only the MLP is new: Q/K/V/O stay the
original model's. The conv output is added to the patch tokens; prefix tokens get linear attention only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .linear import EPS, relu_linear_attention


class DynamicDepthwiseConv(torch.nn.Module):
    """Per-image depthwise ``kernel_size²`` conv over a ``[B, C, H, W]`` map, kernel from pooled input."""

    def __init__(self, channels: int, kernel_size: int = 3, hidden: int | None = None):
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        hidden = hidden or max(16, channels // 4)
        self.kernel_mlp = torch.nn.Sequential(
            torch.nn.Linear(channels, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, channels * kernel_size * kernel_size),
        )
        torch.nn.init.zeros_(self.kernel_mlp[2].weight)
        torch.nn.init.zeros_(self.kernel_mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ks = self.kernel_size
        kernel = self.kernel_mlp(x.mean(dim=(2, 3))).reshape(b, c, ks, ks, 1, 1)
        # a sum of shifted copies rather than conv2d(groups=B·C): the same cross-correlation, but with
        # no batch-dependent group count, so exported graphs keep a free batch dimension
        padded = F.pad(x, (ks // 2,) * 4)
        out = torch.zeros_like(x)
        for dy in range(ks):
            for dx in range(ks):
                out = out + padded[:, :, dy : dy + h, dx : dx + w] * kernel[:, :, dy, dx]
        return out


def with_value_conv(out: torch.Tensor, v: torch.Tensor, conv: DynamicDepthwiseConv, grid: tuple[int, int],
                    num_prefix: int) -> torch.Tensor:
    """``out`` with ``conv`` of V over the patch grid added to its patch tokens (prefix tokens unchanged)."""
    b, h, n, d = v.shape
    gh, gw = grid
    p = num_prefix
    # channel c = head * head_dim + d, the order the output projection reads them in
    v_map = v[:, :, p:].permute(0, 1, 3, 2).reshape(b, h * d, gh, gw)
    added = conv(v_map).reshape(b, h, d, gh * gw).permute(0, 1, 3, 2).to(out.dtype)
    return torch.cat([out[:, :, :p], out[:, :, p:] + added], dim=2)


class JetViTAttention(torch.nn.Module):
    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        grid: tuple[int, int],
        num_prefix: int,
        kernel_size: int = 3,
        eps: float = EPS,
    ):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.grid, self.num_prefix, self.eps = tuple(grid), num_prefix, eps
        self.conv = DynamicDepthwiseConv(num_heads * head_dim, kernel_size)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return with_value_conv(relu_linear_attention(q, k, v, self.eps), v, self.conv, self.grid, self.num_prefix)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, head_dim={self.head_dim}, grid={self.grid}, num_prefix={self.num_prefix}"
