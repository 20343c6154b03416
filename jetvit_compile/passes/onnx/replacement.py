"""The ONNX subgraph that replaces one site: the reference torch module of ``attention/``, exported.

Exporting the reference maths (rather than writing the same maths again in ONNX ops) keeps a single
source of truth: the ONNX rewrite computes what ``attention/`` computes, learned parameters included
(they become initializers). Adapters bridge the layouts a site offers (kᵀ instead of k, heads merged
``[B, N, C]`` for fused ops).
"""
from __future__ import annotations

import functools
import logging
import warnings

import onnx_ir as ir
import torch

from ...attention import build_attention
from ...attention.core import onnx_export_form
from ...errors import RewriteError
from ...layout import Choice
from ...sites import AttentionSite

OPSET = 18  # the dynamo exporter's lowest; models below it are upgraded first (see rewrite.py)


class _Adapter(torch.nn.Module):
    """``(q, k or kᵀ, v)`` as ``[B, H, N, D]`` (the site's head-layout values) -> the reference module ->
    the output in the layout the site's consumers read (``BHND``, or ``BNC`` with heads merged)."""

    def __init__(self, block: torch.nn.Module, k_transposed: bool, out_layout: str):
        super().__init__()
        self.block, self.k_transposed, self.layout = block, k_transposed, out_layout

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = self.block(q, k.transpose(-2, -1) if self.k_transposed else k, v)
        if self.layout == "BHND":
            return out
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, h * d)


def _example(site: AttentionSite, transposed: bool = False) -> torch.Tensor:
    # batch 2, not 1: the exporter would specialise a size-1 dim and fix the batch of the block
    b, h, n, d = 2, site.num_heads, site.tokens, site.head_dim
    return torch.zeros((b, h, d, n) if transposed else (b, h, n, d), dtype=getattr(torch, site.dtype))


def replacement_graph(
    site: AttentionSite, choice: Choice, params: dict[str, torch.Tensor], k_transposed: bool, layout: str,
    ort_kernels: bool = False,
) -> ir.Graph:
    """A fresh ``ir.Graph`` with inputs (q, k, v) and one output, computing ``choice`` at ``site``; with
    ``ort_kernels``, full attention as ONNX Runtime's own kernel (:mod:`...attention.core`)."""
    block = build_attention(choice, site, params)
    # only full attention takes another form for ONNX Runtime (attention.core): other blocks share one export
    ort_kernels = ort_kernels and (choice.kind == "full" or bool(choice.full_heads))
    template = _export(choice, site.num_heads, site.tokens, site.head_dim, site.num_prefix_tokens, site.grid,
                       site.scale, site.dtype, k_transposed, layout, ort_kernels)
    graph = template.clone()
    # the template was exported with a fresh module; put this site's learned values in
    state = {k: v.detach().cpu().numpy() for k, v in block.state_dict().items()}
    for name, value in graph.initializers.items():
        key = name.removeprefix("block.")
        if key in state:
            value.const_value = ir.tensor(state.pop(key), name=name)
    if state:  # a learned value with no initializer would ship the block untrained
        raise RewriteError(f"site {site.index}: learned parameters {sorted(state)} found no place in the ONNX block")
    return graph


@functools.lru_cache(maxsize=64)
def _export(choice, heads, tokens, head_dim, prefix, grid, scale, dtype, k_transposed, layout,
            ort_kernels) -> ir.Graph:
    site = AttentionSite(0, "", "", heads, head_dim, tokens, prefix, grid, scale, dtype=dtype)
    block = build_attention(choice, site)
    # distinct, non-zero values: the exporter folds away a zero bias, and merges parameters of equal values
    # (or folds ops of them), which then have no initializer of their own to carry a site's learned values
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(0.01 + 0.01 * torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
    adapter = _Adapter(block, k_transposed, layout).eval()
    args = (_example(site), _example(site, k_transposed), _example(site))
    try:
        with warnings.catch_warnings(), _quiet_exporter(), onnx_export_form(ort_kernels):
            warnings.simplefilter("ignore")
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(adapter, args, dynamo=True, opset_version=OPSET,
                                        input_names=["q", "k", "v"], output_names=["out"], verbose=False,
                                        dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))
    except Exception as e:  # noqa: BLE001 - exporter errors come in many types
        raise RewriteError(f"exporting the {choice} block to ONNX failed: {type(e).__name__}: {e}".splitlines()[0]) from e
    return program.model.graph


class _quiet_exporter:
    """The exporter logs a line per missing optional library (torchvision); users do not need them."""

    def __enter__(self):
        self.logger = logging.getLogger("torch.onnx")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
