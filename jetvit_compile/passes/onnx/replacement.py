"""The ONNX subgraph that replaces one site: the reference torch module of ``attention/``, exported.

Exporting the reference maths (rather than writing the same maths again in ONNX ops) keeps a single
source of truth: the ONNX rewrite computes what ``attention/`` computes, learned parameters included
(they become initializers). Adapters bridge the layouts a site offers (kᵀ instead of k, heads merged
``[B, N, C]`` for fused ops).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import warnings

import numpy as np
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
    shape = (site.num_heads, site.tokens, site.head_dim, site.num_prefix_tokens, site.grid, site.scale, site.dtype,
             k_transposed, layout, ort_kernels)
    like = _template_choice(choice)
    graph = _filled(_export(like, *shape), block, site)
    if like != choice and not _move_head_indices(graph, build_attention(like, site), block):
        graph = _filled(_export(choice, *shape), block, site)  # indices not found: export this very split
    return graph


def _template_choice(choice: Choice) -> Choice:
    """The choice whose export serves ``choice``: a head split exports once per number of full heads, and
    each site's head indices replace the template's (:func:`_move_head_indices`), so a head trim trying
    many subsets of heads exports few blocks."""
    if not choice.full_heads:
        return choice
    return dataclasses.replace(choice, full_heads=tuple(range(len(choice.full_heads))))


def _filled(template: ir.Graph, block: torch.nn.Module, site: AttentionSite) -> ir.Graph:
    """A copy of ``template`` with ``block``'s learned parameters in its initializers."""
    graph = template.clone()
    state = {k: v.detach().cpu().numpy() for k, v in block.state_dict().items()}
    for name, value in graph.initializers.items():
        key = name.removeprefix("block.")
        if key in state:
            value.const_value = ir.tensor(state.pop(key), name=name)
    if state:  # a learned value with no initializer would ship the block untrained
        raise RewriteError(f"site {site.index}: learned parameters {sorted(state)} found no place in the ONNX block")
    return graph


def _move_head_indices(graph: ir.Graph, exported: torch.nn.Module, block: torch.nn.Module) -> bool:
    """Swap the head indices ``exported`` (the template's module) put into ``graph`` for ``block``'s. The
    exporter folds index buffers into anonymous constants, so each is found by its value: the one constant
    that holds it and that only head Gathers read; False (graph untouched) where there is not exactly one."""
    found, template = [], dict(exported.named_buffers(recurse=False))
    for name, ours in block.named_buffers(recurse=False):  # the split's own; the rest heads' block is the same
        theirs = template[name].numpy()
        hits = [v for v in graph.initializers.values() if _holds(v, theirs) and _head_gather_indices(v)]
        if len(hits) != 1:
            return False
        found.append((hits[0], ours.numpy()))
    for value, ours in found:
        value.const_value = ir.tensor(ours, name=value.name)
    return True


def _holds(value: ir.Value, array: np.ndarray) -> bool:
    const = value.const_value
    return const is not None and const.dtype.numpy() == array.dtype and tuple(const.shape) == array.shape \
        and bool((const.numpy() == array).all())


def _head_gather_indices(value: ir.Value) -> bool:
    """Whether every reader of ``value`` is a Gather over axis 1 (heads of ``[B, H, N, D]``) taking it as indices."""
    uses = value.uses()
    return bool(uses) and all(node.op_type == "Gather" and i == 1 and node.attributes.get_int("axis", 0) == 1
                              for node, i in uses)


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
