"""The layout search: a beam search over per-site attention choices, as in the paper (JETVIT.md).

The variants form a ladder from cheapest to dearest (the paper's: linear, window, full). Every site
starts on the cheapest rung; each step moves one site of each layout in the beam one rung up (or
straight to the top rung), scores
every new layout end to end (``score``: fidelity of the model's real output on calibration images) and
prices it (``cost``: predicted latency from the device profile), and keeps the ``beam`` layouts that buy
the most fidelity per millisecond. It stops at the first layouts that meet ``min_fidelity`` (returning the
fastest of them), or when no move fits ``budget_ms``, or after ``max_evaluations``. A climb that moves
one site at a time can walk past a layout that moves every site together, so each middle rung everywhere
is scored too when it could beat what the climb found (cheaper than its answer, within the budget).
Then it returns the best layout found, or the best it saw and says that the target was not met.

Pure: it knows layouts only as rung indices; the caller's ``score`` and ``cost`` run the model.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from ..errors import UsageError
from ..layout import Choice

State = tuple[int, ...]  # rung index per site


@dataclasses.dataclass(frozen=True)
class Evaluated:
    choices: tuple[str, ...]
    fidelity: float  # the score on calibration images
    predicted_ms: float
    step: int  # 0: the start; n: found at step n


@dataclasses.dataclass
class SearchResult:
    best: Evaluated
    reached: bool  # the constraint was met
    message: str  # what happened, for people
    evaluated: list[Evaluated]  # every layout scored, in order
    ladder: list[str]

    @property
    def layout_text(self) -> str:
        return ",".join(self.best.choices)


def _efficiency(gain: float, extra_ms: float) -> float:
    """Fidelity bought per millisecond; a move that costs nothing and helps is worth the most."""
    if extra_ms <= 1e-6:
        return math.inf if gain > 0 else gain
    return gain / extra_ms


def check_constraints(min_fidelity: float | None, budget_ms: float | None) -> None:
    """A UsageError for a missing or impossible constraint (before any model runs)."""
    if min_fidelity is None and budget_ms is None:
        raise UsageError("give a fidelity target (--min-fidelity) or a latency budget (--budget), or both")
    if min_fidelity is not None and not -1 <= min_fidelity <= 1:
        raise UsageError(f"--min-fidelity is a Pearson correlation, between -1 and 1; got {min_fidelity}")
    if budget_ms is not None and budget_ms <= 0:
        raise UsageError(f"--budget is a latency in milliseconds and must be positive; got {budget_ms}")


def beam_search(
    num_sites: int,
    ladder: Sequence[Choice],
    score: Callable[[list[Choice]], float],
    cost: Callable[[list[Choice]], float],
    min_fidelity: float | None = None,
    budget_ms: float | None = None,
    beam: int = 2,
    max_evaluations: int = 200,
    progress: Callable[[str], None] | None = None,
    priority: Callable[[int, int], float] | None = None,
    moves_per_layout: int | None = None,
) -> SearchResult:
    """Search per-site choices from ``ladder`` (cheapest first) under ``min_fidelity`` and/or ``budget_ms``.

    ``priority(site, rung)``: how much fidelity site ``site`` loses on rung ``rung`` (e.g. from the
    per-site sensitivity scan); with ``moves_per_layout`` only that many of each layout's moves, the sites
    losing most first, are scored per step, which keeps a step's cost independent of the model's depth.
    """
    check_constraints(min_fidelity, budget_ms)
    if len(ladder) < 2 or beam < 1 or max_evaluations < 1:
        raise UsageError("the search needs at least two variants, a beam of at least 1 and one evaluation")
    top = len(ladder) - 1
    seen: dict[State, Evaluated] = {}
    order: list[Evaluated] = []

    def evaluate(state: State, step: int) -> Evaluated:
        if state not in seen:
            choices = [ladder[r] for r in state]
            seen[state] = Evaluated(tuple(map(str, choices)), float(score(choices)), float(cost(choices)), step)
            order.append(seen[state])
            if progress:
                e = seen[state]
                progress(f"step {step}: {','.join(e.choices)} fidelity {e.fidelity:.4f}, {e.predicted_ms:.1f} ms")
        return seen[state]

    def meets(e: Evaluated) -> bool:
        return ((min_fidelity is None or e.fidelity >= min_fidelity)
                and (budget_ms is None or e.predicted_ms <= budget_ms))

    start: State = (0,) * num_sites
    frontier = [start]
    evaluate(start, 0)
    step, why = 0, ""
    while True:
        if min_fidelity is not None and any(meets(e) for e in order):
            break  # a layout meets the target: more rungs only cost time
        moves: dict[State, State] = {}  # child -> the parent it moved from
        for parent in frontier:
            open_sites = [i for i in range(num_sites) if parent[i] < top]
            if priority is not None:
                open_sites.sort(key=lambda i: -priority(i, parent[i]))
            taken = 0
            for i in open_sites:
                if moves_per_layout is not None and taken >= moves_per_layout:
                    break
                for rung in dict.fromkeys((parent[i] + 1, top)):  # the next rung, or straight to the top
                    child = parent[:i] + (rung,) + parent[i + 1:]
                    if child not in seen and child not in moves and (
                            budget_ms is None or cost([ladder[r] for r in child]) <= budget_ms):
                        moves[child] = parent
                        taken += 1
        if not moves:
            why = "no move fits the budget" if budget_ms is not None else "every site is on the top rung"
            break
        if len(seen) + len(moves) > max_evaluations:
            why = f"the next step would pass {max_evaluations} evaluations (max_evaluations)"
            break
        step += 1
        ranked = []
        for child, parent in moves.items():
            e, p = evaluate(child, step), seen[parent]
            ranked.append((_efficiency(e.fidelity - p.fidelity, e.predicted_ms - p.predicted_ms), e.fidelity, child))
        ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
        frontier = [child for _, _, child in ranked[:beam]]

    # one middle rung everywhere (rung 0 everywhere is the start, the top rung everywhere the original)
    bound = min((e.predicted_ms for e in order if meets(e)), default=math.inf) if min_fidelity is not None else math.inf
    for rung in range(1, top):
        everywhere: State = (rung,) * num_sites
        if everywhere in seen or len(seen) >= max_evaluations:
            continue
        ms = cost([ladder[rung]] * num_sites)
        if ms < bound and (budget_ms is None or ms <= budget_ms):
            evaluate(everywhere, step + 1)

    feasible = [e for e in order if meets(e)]
    if feasible:
        best = (min(feasible, key=lambda e: (e.predicted_ms, -e.fidelity)) if min_fidelity is not None
                else max(feasible, key=lambda e: (e.fidelity, -e.predicted_ms)))
        reached = True
        message = (f"fidelity {best.fidelity:.4f} at a predicted {best.predicted_ms:.1f} ms"
                   + (f" (target {min_fidelity})" if min_fidelity is not None else "")
                   + (f" within the {budget_ms:.1f} ms budget" if budget_ms is not None else ""))
    else:
        within = [e for e in order if budget_ms is None or e.predicted_ms <= budget_ms]
        best = max(within or order, key=lambda e: (e.fidelity, -e.predicted_ms))
        reached = False
        message = (f"no layout evaluated meets the target ({why}); the best found has fidelity {best.fidelity:.4f} "
                   f"at a predicted {best.predicted_ms:.1f} ms: lower --min-fidelity, raise --budget, or add a "
                   "dearer variant (e.g. full) to --variants")
    return SearchResult(best, reached, message, order, [str(c) for c in ladder])
