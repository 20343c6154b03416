"""The beam search on its own: layouts scored by a known additive fidelity loss and cost, so that the
right answer is known; the end-to-end search on the real model is in test_search.py."""
import pytest

from jetvit_compile.errors import UsageError
from jetvit_compile.layout import parse_choice
from jetvit_compile.search import beam_search

LADDER = [parse_choice(c) for c in ("window:2+pool:2", "window:4", "full")]
RUNG = {str(c): r for r, c in enumerate(LADDER)}
# fidelity lost per site on each rung (site 2 is the sensitive one), and ms per rung
LOSS = [[0.01, 0.005, 0.0], [0.01, 0.004, 0.0], [0.2, 0.1, 0.0], [0.02, 0.01, 0.0]]
MS = [1.0, 2.0, 5.0]


def score(choices):
    return 1.0 - sum(LOSS[i][RUNG[str(c)]] for i, c in enumerate(choices))


def cost(choices):
    return 10.0 + sum(MS[RUNG[str(c)]] for c in choices)


def test_search_meets_the_fidelity_target_by_fixing_the_sensitive_site_first():
    r = beam_search(4, LADDER, score, cost, min_fidelity=0.95)
    assert r.reached
    assert r.best.fidelity >= 0.95
    assert r.best.choices[2] == "full", "the sensitive site is the one worth its cost"
    assert r.best.choices[0] == "window:2+pool:2", "a cheap, harmless site stays on the cheapest rung"
    assert r.evaluated[0].choices == ("window:2+pool:2",) * 4 and r.evaluated[0].step == 0


def test_a_budget_bounds_every_layout_and_the_best_within_it_is_returned():
    r = beam_search(4, LADDER, score, cost, budget_ms=19.0)
    assert r.reached and r.best.predicted_ms <= 19.0
    assert all(e.predicted_ms <= 19.0 for e in r.evaluated[1:])
    assert r.best.fidelity == max(e.fidelity for e in r.evaluated if e.predicted_ms <= 19.0)


def test_a_rung_everywhere_that_the_one_site_climb_walks_past_is_found():
    """Sites that only pay off together (errors that cancel): the climb, one site a step, goes to full
    attention; the middle rung everywhere meets the target for far less."""
    def together(choices):
        rungs = [RUNG[str(c)] for c in choices]
        if rungs == [1] * 4:
            return 0.99
        return 0.5 + 0.125 * rungs.count(2)

    r = beam_search(4, LADDER, together, cost, min_fidelity=0.98)
    assert r.reached and r.best.choices == ("window:4",) * 4
    assert r.evaluated[1].choices == ("window:4",) * 4 and r.evaluated[1].step == 0, "scored before the climb"


def test_trimming_moves_down_the_sites_that_the_target_does_not_need():
    """Sites 0-2 must all be on the middle rung, site 3 never matters; a climb misled by a wrong priority
    does not find that, the middle rung everywhere meets the target, and trimming site 3 down is cheaper."""
    def three(choices):
        return 0.99 if all(RUNG[str(c)] >= 1 for c in choices[:3]) else 0.5

    r = beam_search(4, LADDER, three, cost, min_fidelity=0.98, beam=1, moves_per_layout=1,
                    priority=lambda site, rung: 1.0 if site == 3 else 0.0)
    assert r.reached and r.best.choices == ("window:4",) * 3 + ("window:2+pool:2",)
    climbed = [e.choices for e in r.evaluated if 0 < e.step < r.best.step]
    assert climbed and r.best.choices not in climbed and all(three(list(map(parse_choice, c))) < 0.98 for c in climbed)


def test_an_unmeetable_target_says_so_and_returns_the_best_found():
    ladder = LADDER[:2]  # no full attention: site 2 can never lose less than 0.1
    r = beam_search(4, ladder, score, cost, min_fidelity=0.95)
    assert not r.reached
    assert "no layout evaluated meets the target" in r.message
    assert r.best.fidelity == max(e.fidelity for e in r.evaluated)


def test_priority_limits_each_step_to_the_most_sensitive_sites():
    r = beam_search(4, LADDER, score, cost, min_fidelity=0.95, beam=1, moves_per_layout=1,
                    priority=lambda site, rung: LOSS[site][rung])
    # the climb starts from the middle rung everywhere (0.881, under the target); one move per step,
    # always the site that loses most: site 2 climbs first
    assert [e.choices for e in r.evaluated if e.step == 1] == [("window:4", "window:4", "full", "window:4")]
    assert r.reached


@pytest.mark.parametrize("kwargs,match", [
    (dict(), "fidelity target"),
    (dict(min_fidelity=1.5), "between -1 and 1"),
    (dict(budget_ms=-1.0), "must be positive"),
])
def test_bad_constraints_are_usage_errors(kwargs, match):
    with pytest.raises(UsageError, match=match):
        beam_search(4, LADDER, score, cost, **kwargs)
