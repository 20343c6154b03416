"""Small models for the bad-input tests: the hand-built ONNX ViTs of tests/passes/onnx/conftest.py, a torch ViT
with a patch convolution, and one whose patch embedding is a linear layer over unfolded patches."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx
import torch

_spec = importlib.util.spec_from_file_location("_bad_input_onnx_models",
                                               Path(__file__).parents[1] / "passes" / "onnx" / "conftest.py")
_onnx_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_onnx_models)
tiny_vit, tiny_resnet = _onnx_models.tiny_vit, _onnx_models.tiny_resnet


def tiny_vit_file(folder: Path, name: str = "tiny.onnx", **kwargs) -> Path:
    path = Path(folder) / name
    onnx.save(tiny_vit(**kwargs), path)
    return path


class _Block(torch.nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)

    def forward(self, t):
        b, n, c = t.shape
        q, k, v = self.qkv(t).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return a.transpose(1, 2).reshape(b, n, c)


class ConvViT(torch.nn.Module):
    def __init__(self, patch: int = 8, dim: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.patch = torch.nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, dim))
        self.block = _Block(dim)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        return self.block(torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1)).mean(dim=1)


class LinearPatchViT(torch.nn.Module):
    """Patches unfolded by reshape/permute and embedded by a Linear layer: no convolution to read a grid from."""

    def __init__(self, patch: int = 8, dim: int = 16, prefix: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.p = patch
        self.embed = torch.nn.Linear(3 * patch * patch, dim)
        self.prefix = torch.nn.Parameter(torch.randn(1, prefix, dim))
        self.block = _Block(dim)

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.p
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), -1)
        t = torch.cat([self.prefix.expand(b, -1, -1), self.embed(patches)], dim=1)
        return self.block(t).mean(dim=1)


def export(module: torch.nn.Module, size: int) -> torch.export.ExportedProgram:
    return torch.export.export(module.eval(), (torch.randn(1, 3, size, size),))
