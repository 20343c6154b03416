"""Rewrite: full attention -> window attention over the patch grid (original weights unchanged)."""
from __future__ import annotations

from torch import fx

from ...attention import WindowAttention
from ...layout import Choice
from ...sites import AttentionSite
from .replace_site import replace_site

KIND = "window"


def check(site: AttentionSite, choice: Choice, params=None) -> str | None:
    """Why ``site`` cannot become ``choice``, or None."""
    gh, gw = site.grid
    if choice.window > max(gh, gw):  # type: ignore[operator]
        return (f"site {site.index}: window {choice.window} is larger than the {gh}x{gw} patch grid; "
                f"use window:{max(gh, gw)} or less (window:{max(gh, gw)} covers the grid, i.e. full attention)")
    return None


def run(gm: fx.GraphModule, sites: list[AttentionSite], choices: list[Choice], params) -> int:
    count = 0
    for site, choice in zip(sites, choices):
        if choice.kind == KIND:
            replace_site(gm, site, WindowAttention(site.scale, site.grid, site.num_prefix_tokens, choice.window))
            count += 1
    return count
