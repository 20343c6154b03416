"""Reference attention maths in plain torch: the single source of truth every rewrite is tested against.

Every module takes ``(q, k, v)`` as ``[B, heads, tokens, head_dim]`` and returns the same shape.
"""
from __future__ import annotations

import dataclasses

import torch

from ..layout import Choice
from ..sites import AttentionSite
from .full import FullAttention, full_attention
from .heads import HeadSplitAttention
from .hedgehog import HedgehogAttention, HedgehogFeatureMap, feature_linear_attention
from .jetvit import DynamicDepthwiseConv, JetViTAttention
from .learned_qk import LearnedQKAttention
from .linear import ReLULinearAttention, relu_linear_attention
from .window import WindowAttention, window_attention
from .window_clustered import ClusteredWindowAttention, clustered_window_attention
from .window_pooled import PooledWindowAttention, pooled_window_attention
from .window_routed import RoutedWindowAttention, routed_window_attention

__all__ = [
    "FullAttention", "WindowAttention", "ReLULinearAttention", "JetViTAttention", "DynamicDepthwiseConv",
    "PooledWindowAttention", "RoutedWindowAttention", "HeadSplitAttention", "full_attention", "window_attention",
    "pooled_window_attention", "routed_window_attention",
    "relu_linear_attention", "build_attention", "HedgehogAttention", "HedgehogFeatureMap", "feature_linear_attention",
    "LearnedQKAttention", "ClusteredWindowAttention", "clustered_window_attention",
]


def build_attention(choice: Choice, site: AttentionSite, params: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The module that computes ``choice`` at ``site``, with learned ``params`` loaded when given."""
    if choice.full_heads:
        # the rest heads are a site of fewer heads (a +learned correction has one temperature per rest head)
        rest_site = dataclasses.replace(site, num_heads=site.num_heads - len(choice.full_heads))
        rest = build_attention(dataclasses.replace(choice, full_heads=None), rest_site)
        module: torch.nn.Module = HeadSplitAttention(choice.full_heads, site.num_heads, site.scale, rest)
        return _load(module, params)
    if choice.learned is not None:
        inner = build_attention(dataclasses.replace(choice, learned=None), site)
        return _load(LearnedQKAttention(inner, site.num_heads, site.head_dim, choice.learned), params)
    if choice.kind == "full":
        module = FullAttention(site.scale)
    elif choice.kind == "window" and (choice.route or choice.global_tokens):
        module = RoutedWindowAttention(site.scale, site.grid, site.num_prefix_tokens, choice.window, choice.pool,
                                       choice.route or 0, choice.global_tokens or 0, choice.group)
    elif choice.kind == "window" and choice.cluster:
        module = ClusteredWindowAttention(site.scale, site.grid, site.num_prefix_tokens, choice.window, choice.cluster)
    elif choice.kind == "window" and choice.pool:
        module = PooledWindowAttention(site.scale, site.grid, site.num_prefix_tokens, choice.window, choice.pool)
    elif choice.kind == "window":
        module = WindowAttention(site.scale, site.grid, site.num_prefix_tokens, choice.window)
    elif choice.variant == "relu":
        module = ReLULinearAttention()
    elif choice.variant == "hedgehog":
        module = HedgehogAttention(site.num_heads, site.head_dim, site.grid, site.num_prefix_tokens)
    else:
        module = JetViTAttention(site.num_heads, site.head_dim, site.grid, site.num_prefix_tokens)
    return _load(module, params)


def _load(module: torch.nn.Module, params: dict[str, torch.Tensor] | None) -> torch.nn.Module:
    if params and module.state_dict():  # parameters learned for a block of this kind (a layout may carry
        module.load_state_dict(params)  # them for sites that now take another choice: those are ignored)
    return module
