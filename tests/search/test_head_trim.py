"""The head trim keeps full attention only on the heads a full site needs (synthetic scores)."""
from jetvit_compile.layout import FULL, parse_choice
from jetvit_compile.search.head_trim import trim_full_heads

BELOW = parse_choice("window:8+pool:4")


def _score(choices):
    """Site 1 needs heads 1 and 3 full; the other heads add a little each."""
    c = choices[1]
    if c == FULL:
        return 0.99
    heads = set(c.full_heads or ())
    return 0.93 + 0.03 * (1 in heads) + 0.03 * (3 in heads) + 0.001 * len(heads)


def _cost(choices):
    return sum(100 if c == FULL else 40 + 15 * len(c.full_heads or ()) for c in choices)


def test_a_full_site_keeps_only_the_heads_it_needs():
    choices = [BELOW, FULL, BELOW]
    trimmed, tried = trim_full_heads(choices, BELOW, [4] * 3, _score, _cost, lambda f, ms: f >= 0.985, step=7,
                                     max_evaluations=100)
    assert [str(c) for c in trimmed] == ["window:8+pool:4", "window:8+pool:4+full:1.3", "window:8+pool:4"]
    assert len(tried) == 4 + 1 + 1  # each head alone, then {1,3} kept, then one more that misses
    assert all(e.step == 7 for e in tried) and min(e.fidelity for e in tried) < 0.985


def test_a_site_that_needs_every_head_stays_full_and_a_small_budget_stops_early():
    strict = lambda f, ms: f >= 0.995  # noqa: E731 - no head can go
    trimmed, tried = trim_full_heads([FULL, BELOW], BELOW, [4, 4], lambda c: 0.99 if c[0] == FULL else 0.9, _cost,
                                     strict, step=0, max_evaluations=100)
    assert trimmed == [FULL, BELOW] and len(tried) == 4
    trimmed, tried = trim_full_heads([BELOW, FULL, BELOW], BELOW, [4] * 3, _score, _cost, lambda f, ms: f >= 0.985,
                                     step=0, max_evaluations=3)
    assert trimmed == [BELOW, FULL, BELOW] and not tried


def test_a_trim_the_profile_prices_above_full_attention_is_not_kept():
    dear = lambda choices: sum(100 if c == FULL else 90 + 15 * len(c.full_heads or ()) for c in choices)  # noqa: E731
    trimmed, tried = trim_full_heads([BELOW, FULL, BELOW], BELOW, [4] * 3, _score, dear, lambda f, ms: f >= 0.985,
                                     step=0, max_evaluations=100)
    assert trimmed == [BELOW, FULL, BELOW]  # {1, 3} full would meet the target, but at 90 + 30 > 100
    assert any(e.fidelity >= 0.985 for e in tried)
