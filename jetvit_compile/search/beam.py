"""The layout search: a beam search over per-site attention choices, as in the paper (JETVIT.md).

The variants form a ladder from cheapest to dearest (the paper's: linear, window, full). The search scores
the cheapest rung everywhere (the paper's start) and each middle rung everywhere: a climb that moves one
site at a time can walk past a layout that moves every site together. It climbs from the dearest of those
that misses the fidelity target (or, under a budget alone, from the best that fits it): each step moves
one site of each layout in the beam one rung up (or straight to the top rung), scores every new layout end
to end (``score``: fidelity of the model's real output on calibration images), prices it (``cost``:
predicted latency from the device profile), and keeps the ``beam`` layouts that buy the most fidelity per
millisecond. A move that costs as much as the cheapest layout already meeting the target is not tried. The
climb stops at the first layouts that meet ``min_fidelity``, or when no move fits ``budget_ms``, or after
``max_evaluations``. Then it trims: from the cheapest layout meeting the target, it moves sites one rung
down, those that lose least there first, as long as the target still holds. It returns the best layout
found, or the best it saw and says that the target was not met.

Pure: it knows layouts only as rung indices; the caller's ``score`` and ``cost`` run the model.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from ..errors import UsageError
from ..layout import Choice, compact

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


def meets_constraints(fidelity: float, predicted_ms: float, min_fidelity: float | None,
                      budget_ms: float | None) -> bool:
    """Whether a layout scored ``fidelity`` at ``predicted_ms`` meets the user's target and budget."""
    return ((min_fidelity is None or fidelity >= min_fidelity)
            and (budget_ms is None or predicted_ms <= budget_ms))


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
                progress(f"step {step}: {compact(e.choices)}  fidelity {e.fidelity:.4f}, {e.predicted_ms:.1f} ms")
        return seen[state]

    def meets(e: Evaluated) -> bool:
        return meets_constraints(e.fidelity, e.predicted_ms, min_fidelity, budget_ms)

    def bound() -> float:
        """The predicted ms of the cheapest layout meeting the fidelity target (no move costs more)."""
        if min_fidelity is None:
            return math.inf
        return min((e.predicted_ms for e in order if meets(e)), default=math.inf)

    def by_loss(sites: list[int], rung_of: Callable[[int], int]) -> list[int]:
        """``sites``, those that lose most on their rung ``rung_of(site)`` first (as given: no priority)."""
        return sorted(sites, key=lambda i: -priority(i, rung_of(i))) if priority is not None else sites

    # the cheapest rung everywhere (the start), then each middle rung everywhere (the top: the original)
    everywhere = [(rung,) * num_sites for rung in range(top)]
    for state in everywhere:
        if state == everywhere[0] or budget_ms is None or cost([ladder[r] for r in state]) <= budget_ms:
            evaluate(state, 0)
    if min_fidelity is not None:
        misses = [s for s in everywhere if s in seen and not meets(seen[s])
                  and seen[s].predicted_ms < bound()]
        frontier = misses[-1:]  # the dearest that misses the target: nothing cheaper can meet it by moving up
    else:
        within = [s for s in everywhere if s in seen and meets(seen[s])]
        frontier = [max(within, key=lambda s: seen[s].fidelity)] if within else [everywhere[0]]
    step, why = 0, "the cheapest layouts already meet the target"
    while frontier:
        moves: dict[State, State] = {}  # child -> the parent it moved from
        cheapest_met = bound()
        for parent in frontier:
            open_sites = by_loss([i for i in range(num_sites) if parent[i] < top], lambda i: parent[i])
            taken = 0
            for i in open_sites:
                if moves_per_layout is not None and taken >= moves_per_layout:
                    break
                for rung in dict.fromkeys((parent[i] + 1, top)):  # the next rung, or straight to the top
                    child = parent[:i] + (rung,) + parent[i + 1:]
                    if child in seen or child in moves:
                        continue
                    ms = cost([ladder[r] for r in child])
                    if ms < cheapest_met and (budget_ms is None or ms <= budget_ms):
                        moves[child] = parent
                        taken += 1
        if not moves:
            why = ("no move fits the budget" if budget_ms is not None else
                   "no cheaper move is left" if bound() < math.inf else "every site is on the top rung")
            break
        if len(seen) + len(moves) > max_evaluations:
            why = f"the next step would pass {max_evaluations} evaluations (max_evaluations)"
            break
        step += 1
        ranked = []
        for child, parent in moves.items():
            e, p = evaluate(child, step), seen[parent]
            ranked.append((_efficiency(e.fidelity - p.fidelity, e.predicted_ms - p.predicted_ms), e.fidelity, child))
        if min_fidelity is not None and any(meets(seen[c]) for _, _, c in ranked):
            break  # a layout meets the target: more rungs only cost time
        ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
        frontier = [child for _, _, child in ranked[:beam]]

    # trim: from the cheapest layout meeting the target, sites that lose least one rung down go down
    while min_fidelity is not None and bound() < math.inf and len(seen) < max_evaluations:
        here = next(s for s, e in seen.items() if meets(e) and e.predicted_ms == bound())
        lower = by_loss([i for i in range(num_sites) if here[i] > 0], lambda i: here[i] - 1)[::-1]
        tries = [here[:i] + (here[i] - 1,) + here[i + 1:] for i in lower]
        tries = [t for t in tries if t not in seen]
        if not tries:
            break
        step += 1
        for t in tries:
            if len(seen) >= max_evaluations or meets(evaluate(t, step)):
                break
        else:
            break  # no site can go down without missing the target

    feasible = [e for e in order if meets(e)]
    if feasible:
        best = (min(feasible, key=lambda e: (e.predicted_ms, -e.fidelity)) if min_fidelity is not None
                else max(feasible, key=lambda e: (e.fidelity, -e.predicted_ms)))
        reached = True
        message = (f"fidelity {best.fidelity:.4f} at a predicted {best.predicted_ms:.1f} ms"
                   + (f" (target {round(min_fidelity, 4)})" if min_fidelity is not None else "")
                   + (f" within the {budget_ms:.1f} ms budget" if budget_ms is not None else ""))
    else:
        within = [e for e in order if budget_ms is None or e.predicted_ms <= budget_ms]
        best = max(within or order, key=lambda e: (e.fidelity, -e.predicted_ms))
        reached = False
        message = (f"no layout evaluated meets the target ({why}); the best found has fidelity {best.fidelity:.4f} "
                   f"at a predicted {best.predicted_ms:.1f} ms: lower --min-fidelity, raise --budget, or add a "
                   "dearer variant (e.g. full) to --variants")
    return SearchResult(best, reached, message, order, [str(c) for c in ladder])
