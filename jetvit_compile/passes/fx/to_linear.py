"""Rewrite: full attention -> ReLU linear attention, or the JetViT block (linear + dynamic conv on V).

The JetViT block's learned kernel MLP comes from the layout's parameters (``site{i}.conv.*``); a site
without parameters starts from the zero-initialised last layer, i.e. plain ReLU linear attention.
"""
from __future__ import annotations

import torch
from torch import fx

from ...attention import JetViTAttention, ReLULinearAttention
from ...layout import Choice
from ...sites import AttentionSite
from .replace_site import replace_site

KIND = "linear"


def _module(site: AttentionSite, choice: Choice, params: dict[str, torch.Tensor]) -> torch.nn.Module:
    if choice.variant == "relu":
        return ReLULinearAttention()
    module = JetViTAttention(site.num_heads, site.head_dim, site.grid, site.num_prefix_tokens)
    if params:
        module.load_state_dict(params)
    return module


def check(site: AttentionSite, choice: Choice, params: dict[str, torch.Tensor] | None = None) -> str | None:
    if choice.variant == "jetvit" and params:
        try:
            _module(site, choice, params)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1].strip()
            return f"site {site.index}: learned parameters do not fit this site ({first})"
    return None


def run(gm: fx.GraphModule, sites: list[AttentionSite], choices: list[Choice], params) -> int:
    count = 0
    for site, choice in zip(sites, choices):
        if choice.kind == KIND:
            replace_site(gm, site, _module(site, choice, params(site.index)))
            count += 1
    return count
