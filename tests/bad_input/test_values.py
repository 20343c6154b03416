"""Values accepted silently before, refused (or said) now: profile times, layout counts over the grid,
search targets, empty variants, learned choices without parameters; busy-machine profiles."""
from __future__ import annotations

import json
import math
import warnings

import pytest

from jetvit_compile.errors import UsageError
from jetvit_compile.layout import FULL, parse_choice
from jetvit_compile.passes.checks import UntrainedWarning, check_all, check_choice
from jetvit_compile.profiles import Profile
from jetvit_compile.profiles.cost_model import (InconsistentProfileError, settle_entries, settled_base,
                                                unstable_keys)
from jetvit_compile.profiles.profile import site_entry_key
from jetvit_compile.search.settings import SearchSettings
from jetvit_compile.sites import AttentionSite


def _site(index=0, grid=(8, 8)):
    return AttentionSite(index=index, name=f"a{index}", form="sdpa", num_heads=2, head_dim=8,
                         tokens=grid[0] * grid[1] + 1, num_prefix_tokens=1, grid=grid, scale=8 ** -0.5)


def _profile(entries):
    p = Profile.new("torch")
    p.entries.update(entries)
    return p


@pytest.mark.parametrize("entry", [{"median_ms": -60.0, "p90_ms": 1.0, "runs": 5},
                                   {"median_ms": 1.0, "p90_ms": math.inf, "runs": 5},
                                   {"median_ms": 2.0, "p90_ms": 1.0, "runs": 5},
                                   {"median_ms": 1.0, "p90_ms": 1.0, "runs": 0}])
def test_profile_with_impossible_times_is_refused_on_load(tmp_path, entry):
    doc = Profile.new("torch").to_json()
    doc["entries"] = {site_entry_key(_site(), FULL): entry}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc).replace("Infinity", "1e999"))
    with pytest.raises(UsageError, match=r"p\.json: entry"):
        Profile.load(path)


def test_profile_add_refuses_a_negative_time():
    with pytest.raises(UsageError, match="negative"):
        Profile.new("torch").add("full/x", -1.0, 1.0, 3)


@pytest.mark.parametrize("text, why", [("window:4+pool:2+route:64", "route:64"),
                                       ("window:4+pool:2+route:8+global:1000", "global:1000"),
                                       ("window:4+cluster:1000", "cluster:1000")])
def test_route_global_and_cluster_counts_over_the_grid_are_refused(text, why):
    reason = check_choice(_site(), parse_choice(text), {})
    assert reason and why in reason
    assert check_choice(_site(), parse_choice("window:4+pool:2+route:8+global:32"), {}) is None


@pytest.mark.parametrize("kwargs, match", [(dict(min_fidelity=-1), "min-fidelity"),
                                           (dict(min_fidelity=1.5), "min-fidelity"),
                                           (dict(min_fidelity=math.nan), "min-fidelity"),
                                           (dict(budget_ms=math.inf), "budget"),
                                           (dict(budget_ms=math.nan), "budget"),
                                           (dict(budget_ms=0), "budget"),
                                           (dict(min_fidelity=0.9, variants=()), "variants is empty"),
                                           (dict(min_fidelity=0.9, reuse_mb=-1), "reuse-mb"),
                                           (dict(min_fidelity=0.9, reuse_mb=1.5), "reuse-mb"),
                                           (dict(min_fidelity=0.9, validation=1), "validation-images"),
                                           (dict(min_fidelity=0.9, validation=-2), "validation-images")])
def test_search_settings_no_search_can_mean_are_refused(kwargs, match):
    with pytest.raises(UsageError, match=match):
        SearchSettings(**kwargs)


@pytest.mark.parametrize("option, value, why", [("--variants", "", "variants is empty"),
                                                ("--validation-images", "1", "validation-images is a number of photos")])
def test_cli_search_values_no_search_can_mean_are_refused(tmp_path, option, value, why):
    from click.testing import CliRunner

    from jetvit_compile.cli import main
    from cli_errors import error_line
    from models import tiny_vit_file

    model = tiny_vit_file(tmp_path)
    (tmp_path / "photos").mkdir()
    line = error_line(CliRunner().invoke(main, ["search", str(model), "--calib", str(tmp_path / "photos"), "--min-fidelity",
                                                "0.9", option, value, "-o", str(tmp_path / "l.json")]), 2)
    assert why in line and not (tmp_path / "l.json").exists()


def test_linear_jetvit_without_parameters_warns_that_it_is_relu_linear_attention():
    sites = [_site(0), _site(1)]
    with pytest.warns(UntrainedWarning, match=r"linear:jetvit at sites 0-1 .*ReLU linear attention"):
        check_all(sites, [parse_choice("linear:jetvit")] * 2, lambda i: {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_all(sites, [parse_choice("linear:jetvit")] * 2, lambda i: {}, warn_untrained=False)
        check_all(sites, [parse_choice("window:4")] * 2, lambda i: {})


def _entry(median, p90):
    return {"median_ms": median, "p90_ms": p90, "runs": 10}


def test_unstable_entries_are_measured_again_then_refused():
    site = _site()
    key = site_entry_key(site, FULL)
    prof = _profile({key: _entry(40.0, 70.0)})  # p90 1.75x the median: a busy machine
    assert unstable_keys(prof, [key]) == [key]
    calls = []

    def quiet(keys):
        calls.append(keys)
        prof.entries.update({k: _entry(40.0, 42.0) for k in keys})

    settle_entries(prof, [key], quiet)
    assert calls == [[key]] and prof.entries[key]["p90_ms"] == 42.0
    assert unstable_keys(_profile({key: _entry(5.0, 12.0)}), [key]) == [], "small blocks jitter: not judged"

    prof = _profile({key: _entry(40.0, 70.0)})
    with pytest.raises(InconsistentProfileError, match=r"profile .* --force"):
        settle_entries(prof, [key], lambda keys: None)


def test_blocks_that_do_not_fit_the_whole_model_are_measured_again_then_refused():
    sites = [_site(0), _site(1)]
    key = site_entry_key(sites[0], FULL)
    prof = _profile({key: _entry(400.0, 420.0)})  # two blocks of 400 ms in a 500 ms model
    remeasured = []

    def quiet(keys):
        remeasured.append(keys)
        prof.entries[key] = _entry(100.0, 105.0)

    assert settled_base(prof, sites, lambda: 500.0, quiet) == pytest.approx(300.0)
    assert remeasured == [[key]]
    prof = _profile({key: _entry(400.0, 420.0)})
    with pytest.raises(InconsistentProfileError, match=r"add up to 800 ms, more than the 500 ms .*--force"):
        settled_base(prof, sites, lambda: 500.0, lambda keys: None)
