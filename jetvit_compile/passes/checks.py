"""Whether a site can take a choice: IR-neutral checks shared by the FX and ONNX rewrites."""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from ..attention import build_attention
from ..errors import UnsupportedModelError, UsageError
from ..layout import Choice
from ..sites import AttentionSite


def check_choice(site: AttentionSite, choice: Choice, params: dict[str, torch.Tensor]) -> str | None:
    """Why ``site`` cannot become ``choice``, or None.

    A learned choice (``linear:jetvit``, ``linear:hedgehog``, ``+learned``) with no parameters is allowed: each
    has a defined init (``attention/``: the JetViT block is ReLU linear attention, hedgehog's feature maps are
    ``[softmax(x), softmax(-x)]``, ``+learned`` is its training-free choice exactly), which is what a layout
    names before attention transfer has run. Parameters that are given must fit the site's block exactly
    (every name, every shape): a half-fitting set would run a block nobody trained."""
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
    gh, gw = site.grid
    if choice.kind == "window" and choice.route and choice.pool:
        cells = -(-gh // choice.pool) * -(-gw // choice.pool)
        if choice.route > cells:
            return (f"route:{choice.route} reads more cells than the {cells} pool:{choice.pool} cells of the {gh}x{gw} "
                    f"patch grid; use route:{cells} or less")
    if choice.kind == "window" and choice.global_tokens and choice.global_tokens > gh * gw:
        return (f"global:{choice.global_tokens} is more tokens than the {gh}x{gw} patch grid has ({gh * gw}); "
                f"use global:{gh * gw} or less")
    if choice.kind == "window" and choice.cluster and choice.cluster > gh * gw:
        return (f"cluster:{choice.cluster} is more clusters than the {gh}x{gw} patch grid has tokens ({gh * gw}); "
                f"use cluster:{gh * gw} or less")
    if choice.is_learned and params:
        misfit = _misfit(build_attention(choice, site).state_dict(), params)
        if misfit:
            return (f"learned parameters do not fit this site's {choice} block ({misfit}); train them for this "
                    "model and choice (attention transfer) or drop them from the layout")
    return None


def _misfit(wanted: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """What is wrong with ``given`` as the values of ``wanted`` (names and shapes), or ''."""
    problems = []
    if missing := sorted(set(wanted) - set(given)):
        problems.append("missing " + ", ".join(missing))
    if extra := sorted(set(given) - set(wanted)):
        problems.append("not in the block: " + ", ".join(extra))
    problems += [f"{name} is {list(given[name].shape)}, the site needs {list(value.shape)}"
                 for name, value in wanted.items() if name in given and given[name].shape != value.shape]
    return "; ".join(problems)


def check_all(sites: list[AttentionSite], choices: list[Choice], params: Callable[[int], dict], *,
              warn_untrained: bool = True) -> None:
    """Raise one error listing every site that cannot take its choice (not just the first); warn once about
    learned choices that have no parameters (they run at their init: linear:jetvit is then ReLU linear
    attention exactly)."""
    problems: dict[str, list[int]] = {}
    untrained: dict[str, list[int]] = {}
    for s, c in zip(sites, choices):
        given = params(s.index)
        if reason := check_choice(s, c, given):
            problems.setdefault(reason, []).append(s.index)
        elif c.is_learned and not given:
            untrained.setdefault(str(c), []).append(s.index)
    if untrained and warn_untrained:
        warnings.warn("; ".join(f"{choice} at {_sites(ix)} has no learned parameters: it runs untrained, at its "
                                f"init{_INIT.get(choice, '')}" for choice, ix in untrained.items())
                      + " (train it first: jetvit-compile distill MODEL --layout L --calib PHOTOS -o L2.json)",
                      UntrainedWarning, stacklevel=3)
    if problems:
        raise UsageError("layout does not fit the model: "
                         + "; ".join(f"{_sites(ix)}: {reason}" for reason, ix in problems.items()))


class UntrainedWarning(UserWarning):
    """A learned choice with no parameters: it runs at its documented init, not as trained."""


_INIT = {"linear:jetvit": " (exactly ReLU linear attention, linear:relu)",
         "linear:hedgehog": " (feature maps [softmax(x), softmax(-x)])"}


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
