"""Whether a site can take a choice: IR-neutral checks shared by the FX and ONNX rewrites."""
from __future__ import annotations

from typing import Callable

import torch

from ..attention import build_attention
from ..errors import UnsupportedModelError, UsageError
from ..layout import Choice
from ..sites import AttentionSite


def check_choice(site: AttentionSite, choice: Choice, params: dict[str, torch.Tensor]) -> str | None:
    """Why ``site`` cannot become ``choice``, or None."""
    if choice.kind == "window":
        gh, gw = site.grid
        if choice.window > max(gh, gw):  # type: ignore[operator]
            return (f"window {choice.window} is larger than the {gh}x{gw} patch grid; "
                    f"use window:{max(gh, gw)} or less (window:{max(gh, gw)} covers the grid, i.e. full attention)")
    if choice.full_heads and (max(choice.full_heads) >= site.num_heads or len(choice.full_heads) == site.num_heads):
        return (f"+full:{'.'.join(map(str, choice.full_heads))} needs heads 0-{site.num_heads - 1} and at least one "
                f"left to the window (the site has {site.num_heads} heads; for all of them use full)")
    if choice.kind == "window" and choice.pool and choice.pool > max(site.grid):
        return f"pool cells of {choice.pool} are larger than the {site.grid[0]}x{site.grid[1]} patch grid"
    if choice.kind == "linear" and params:
        try:
            build_attention(choice, site, params)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1].strip()
            return f"learned parameters do not fit this site ({first})"
    return None


def check_all(sites: list[AttentionSite], choices: list[Choice], params: Callable[[int], dict]) -> None:
    """Raise one error listing every site that cannot take its choice (not just the first)."""
    problems: dict[str, list[int]] = {}
    for s, c in zip(sites, choices):
        if reason := check_choice(s, c, params(s.index)):
            problems.setdefault(reason, []).append(s.index)
    if problems:
        raise UsageError("layout does not fit the model: "
                         + "; ".join(f"{_sites(ix)}: {reason}" for reason, ix in problems.items()))


def _sites(indices: list[int]) -> str:
    if len(indices) == 1:
        return f"site {indices[0]}"
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"sites {indices[0]}-{indices[-1]}"
    return "sites " + ",".join(map(str, indices))


def require_sites(sites: list[AttentionSite], refused: list[str], looked_for: str) -> list[AttentionSite]:
    """``sites``, or one error saying what was looked for and why each candidate was refused."""
    if not sites:
        why = ("; refused: " + "; ".join(refused)) if refused else ""
        raise UnsupportedModelError(f"no attention found in the graph (looked for {looked_for}){why}")
    return sites


# pass name per choice kind, shared by both IRs so that their summaries read the same
PASS_NAMES = {"window": "to_window", "linear": "to_linear"}
