"""The ordered FX rewrite pipeline: check every site first, then run each pass, count what it changed."""
from __future__ import annotations

from typing import Callable

import torch
from torch import fx

from ...errors import UsageError
from ...layout import Choice
from ...sites import AttentionSite
from . import to_linear, to_window

# (name, pass module). Order does not matter for correctness (each site is rewritten once), it only
# fixes the order of the summary. `full` sites are left as they are.
PASSES = [("to_window", to_window), ("to_linear", to_linear)]


def check_all(sites: list[AttentionSite], choices: list[Choice], params: Callable[[int], dict]) -> None:
    """Raise one error listing every site that cannot take its choice."""
    problems = []
    for site, choice in zip(sites, choices):
        for _, p in PASSES:
            if choice.kind == p.KIND:
                reason = p.check(site, choice, params(site.index))
                if reason:
                    problems.append(reason)
    if problems:
        raise UsageError("layout does not fit the model: " + "; ".join(problems))


def run_passes(
    gm: fx.GraphModule,
    sites: list[AttentionSite],
    choices: list[Choice],
    params: Callable[[int], dict[str, torch.Tensor]],
) -> dict[str, int]:
    """Rewrite ``gm`` in place; return ``{pass: sites changed}``."""
    check_all(sites, choices, params)
    summary = {name: p.run(gm, sites, choices, params) for name, p in PASSES}
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return summary
