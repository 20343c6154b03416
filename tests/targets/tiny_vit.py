"""A tiny ViT (patch conv, class token, one attention block, mean pool) that every CPU target lowers in seconds."""
from __future__ import annotations

import torch


class TinyViT(torch.nn.Module):
    """Patch conv 8x8 to width 32, class token, one 2-head attention block, mean pool."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.patch = torch.nn.Conv2d(3, 32, 8, stride=8)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 32))
        self.qkv = torch.nn.Linear(32, 96)
        self.proj = torch.nn.Linear(32, 32)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1)
        b, n, _ = t.shape
        q, k, v = self.qkv(t).reshape(b, n, 3, 2, 16).permute(2, 0, 3, 1, 4)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(a.transpose(1, 2).reshape(b, n, 32)).mean(dim=1)


def tiny_program(size: int) -> torch.export.ExportedProgram:
    return torch.export.export(TinyViT().eval(), (torch.randn(1, 3, size, size),))
