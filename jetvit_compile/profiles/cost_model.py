"""Predicted latency of a layout from a device profile.

latency(layout) = base_ms + Σ_sites block_ms(site, choice), where ``base_ms`` is everything but attention
(patch embedding, projections, MLPs, norms, head) and ``block_ms`` is the profile's measured median
of that choice's attention block at that site's shape. ``base_ms`` comes from one measurement of the
original model: :func:`base_from_measurement` subtracts the profile's full-attention block times.
Measured time, not FLOPs, decides (JETVIT.md, cost model): the same rule on every backend.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Callable, Sequence

from ..errors import UsageError
from ..layout import FULL, Choice, Layout, parse_choice
from ..passes.checks import check_choice
from ..sites import AttentionSite
from .profile import Profile, site_entry_key

Choices = Sequence[Choice | str] | Layout | str | os.PathLike


def resolve_choices(sites: Sequence[AttentionSite], choices: Choices) -> list[Choice]:
    """One Choice per site from a list (Choice or str), a Layout, an inline layout or a layout file."""
    if isinstance(choices, (list, tuple)):
        out = [c if isinstance(c, Choice) else parse_choice(c) for c in choices]
        if len(out) != len(sites):
            raise UsageError(f"{len(out)} choices for {len(sites)} attention sites; give one choice per site")
        return out
    return Layout.coerce(choices).resolve(len(sites))


def block_times(profile: Profile, sites: Sequence[AttentionSite], choices: Choices) -> list[float]:
    """The profile's median ms of each site's attention block under its choice, in site order (a choice
    with full attention on some heads, unmeasured, is priced as those heads' share of the full block plus
    the others' share of its window variant's block).

    Every missing entry is named in one UsageError, with how to measure it.
    """
    resolved = resolve_choices(sites, choices)
    times: list[float] = []
    missing: dict[str, list[int]] = {}
    for site, choice in zip(sites, resolved):
        entry = profile.entries.get(site_entry_key(site, choice))
        if entry is None and choice.full_heads:  # unmeasured per-head split: its heads' shares of both blocks
            full = profile.entries.get(site_entry_key(site, FULL))
            rest = profile.entries.get(site_entry_key(site, dataclasses.replace(choice, full_heads=None)))
            if full and rest:
                share = len(choice.full_heads) / site.num_heads
                times.append(share * full["median_ms"] + (1 - share) * rest["median_ms"])
                continue
        if entry is None:
            reason = check_choice(site, choice, {})
            missing.setdefault(site_entry_key(site, choice) + (f" ({reason})" if reason else ""), []).append(site.index)
        else:
            times.append(entry["median_ms"])
    if missing:
        variants = sorted({str(c) for s, c in zip(sites, resolved)
                           if site_entry_key(s, c) not in profile.entries and not check_choice(s, c, {})})
        how = (f"; measure them with jetvit_compile.profiles.profile_sites(sites, variants={variants!r}, "
               f"backend={profile.backend!r}, profile=profile) or: jetvit-compile profile MODEL --target "
               f"{profile.backend}") if variants else ""
        listed = "; ".join(f"{key} at site{'s' if len(ix) > 1 else ''} {','.join(map(str, ix))}"
                           for key, ix in missing.items())
        raise UsageError(f"the {profile.backend} profile of {profile.device_key} lacks {listed}{how}")
    return times


def predict(profile: Profile, sites: Sequence[AttentionSite], choices: Choices, base_ms: float) -> float:
    """Predicted ms of the model under ``choices``: ``base_ms + Σ block_times(profile, sites, choices)``."""
    return base_ms + sum(block_times(profile, sites, choices))


def base_from_measurement(profile: Profile, sites: Sequence[AttentionSite], full_model_ms: float) -> float:
    """Everything but attention: the measured ms of the original model minus its full-attention blocks.

    A negative result (the isolated blocks add up to more than the whole model) means the profile and
    the measurement do not match (another backend, thread count or input size): a warning, not an error.
    """
    base = full_model_ms - sum(block_times(profile, sites, [FULL] * len(sites)))
    if base < 0:
        warnings.warn(f"the full-attention blocks of the {profile.backend} profile add up to more than the "
                      f"measured {full_model_ms:.3g} ms of the whole model (base {base:.3g} ms); check that "
                      "both were measured with the same backend, threads and input size", stacklevel=2)
    return base


UNSTABLE_SPREAD = 1.5  # p90 / median above this: the machine was busy while the block was timed
# blocks faster than this jitter relatively more (a 2-core machine's scheduler alone spreads 1 ms blocks by 2x and
# more) and weigh little in a layout's cost; the blocks that decide a high-resolution layout take 40-400 ms
UNSTABLE_MIN_MS = 20.0


class InconsistentProfileError(UsageError):
    """A profile whose timings cannot be trusted (measured on a busy machine) even after measuring again."""


def _fix(profile: Profile) -> str:
    return (f"re-measure it on a quiet machine: jetvit-compile profile MODEL --target {profile.backend} --force "
            "(nothing else running)")


def unstable_keys(profile: Profile, keys: Sequence[str]) -> list[str]:
    """The entries among ``keys`` whose runs spread too far (p90 > UNSTABLE_SPREAD x median)."""
    out = []
    for key in dict.fromkeys(keys):
        e = profile.entries.get(key)
        if e and e["median_ms"] >= UNSTABLE_MIN_MS and e["p90_ms"] > UNSTABLE_SPREAD * e["median_ms"]:
            out.append(key)
    return out


def settle_entries(profile: Profile, keys: Sequence[str], remeasure: Callable[[list[str]], None]) -> None:
    """Measure the unstable entries among ``keys`` once more (``remeasure(keys)`` replaces them in
    ``profile``); still unstable: an InconsistentProfileError with the fix."""
    bad = unstable_keys(profile, keys)
    if not bad:
        return
    remeasure(bad)
    still = unstable_keys(profile, bad)
    if still:
        listed = ", ".join(f"{k} (p90 {profile.entries[k]['p90_ms']:.3g} ms, median "
                           f"{profile.entries[k]['median_ms']:.3g} ms)" for k in still)
        raise InconsistentProfileError(f"the {profile.backend} profile's timings spread too far to rank layouts, "
                                       f"measured twice: {listed}; {_fix(profile)}")


def settled_base(profile: Profile, sites: Sequence[AttentionSite], full_model_ms: Callable[[], float],
                 remeasure: Callable[[list[str]], None]) -> float:
    """:func:`base_from_measurement`, never negative: when the full-attention blocks add up to more than the
    whole model (one of them timed on a busy machine), the blocks and the model are measured once more; still
    so, an InconsistentProfileError with the fix (a search on a negative base ranks layouts by noise)."""
    keys = [site_entry_key(s, FULL) for s in sites]
    for attempt in range(2):
        whole = full_model_ms()
        blocks = sum(block_times(profile, sites, [FULL] * len(sites)))
        if whole - blocks >= 0:
            return whole - blocks
        if attempt == 0:
            remeasure(list(dict.fromkeys(keys)))
    raise InconsistentProfileError(
        f"the full-attention blocks of the {profile.backend} profile add up to {blocks:.3g} ms, more than the "
        f"{whole:.3g} ms measured for the whole model, measured twice (the profile or the model was timed on a busy "
        f"machine, or with other threads/backend); {_fix(profile)}")


def flop_speedup_bound(tokens: int, width: int) -> float:
    """JETVIT.md's bound 1 + N/(6d): the whole-model FLOP speedup if attention cost nothing (per block,
    projections + MLP cost 24·N·d², the attention core 4·N²·d)."""
    return 1 + tokens / (6 * width)

