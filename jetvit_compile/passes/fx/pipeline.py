"""The FX rewrite pipeline: check every site first, then swap each non-full site, count what changed.

Each site's new block is the reference module of ``attention/`` (built by ``build_attention``), so the
rewritten graph computes exactly the reference maths; ``full`` sites are left untouched.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import fx

from ...attention import build_attention
from ...layout import Choice
from ...sites import AttentionSite
from ..checks import PASS_NAMES, check_all
from .replace_site import replace_site


def run_passes(
    gm: fx.GraphModule,
    sites: list[AttentionSite],
    choices: list[Choice],
    params: Callable[[int], dict[str, torch.Tensor]],
) -> dict[str, int]:
    """Rewrite ``gm`` in place; return ``{pass: sites changed}``."""
    check_all(sites, choices, params)
    summary = dict.fromkeys(PASS_NAMES.values(), 0)
    for site, choice in zip(sites, choices):
        if choice.kind in PASS_NAMES:
            replace_site(gm, site, build_attention(choice, site, params(site.index)))
            summary[PASS_NAMES[choice.kind]] += 1
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return summary
