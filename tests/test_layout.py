import json

import pytest
import torch

from jetvit_compile.errors import UsageError
from jetvit_compile.layout import FULL, LEARNED_RANK, Choice, Layout, parse_choice
from jetvit_compile.sites import AttentionSite, architecture_fingerprint


def test_inline_forms():
    assert [str(c) for c in Layout.parse("window:14").resolve(3)] == ["window:14"] * 3
    assert [str(c) for c in Layout.parse("window:14;full@0,2").resolve(3)] == ["full", "window:14", "full"]
    assert [str(c) for c in Layout.parse("full, linear:jetvit ,linear:relu").resolve(3)] == [
        "full", "linear:jetvit", "linear:relu"]
    assert str(Layout.parse("linear:jetvit;full@5,11")) == "linear:jetvit;full@5,11"


@pytest.mark.parametrize("text,message", [
    ("", "empty layout"), ("window:0", "at least 1"), ("window:7+pool:4+route:0", "at least 1"),
    ("window:7+pool:4+global:0", "at least 1"), ("window:7+global:8", "unknown attention choice"),
    ("window:7+cluster:0", "at least 1"), ("window:7+pool:4+cluster:8", "unknown attention choice"),
    ("window:15+pool:4+route:8+group:4", "must divide the window 15"), ("window:15+pool:4+group:5", "unknown"),
    ("window:7+route:2", "unknown attention choice"), ("window", "unknown attention choice"),
    ("window:7+learned:x", "unknown attention choice"), ("linear:relu+learned", "unknown attention choice"),
    ("window:7+learned+pool:2", "unknown attention choice"),
    ("full;window:3", "choice@i,j"), ("full,window:3;full@1", "single default"),
])
def test_parse_errors(text, message):
    with pytest.raises(UsageError, match=message):
        Layout.parse(text)


def test_json_and_safetensors_round_trip(tmp_path):
    params = {"site1.conv.kernel_mlp.0.weight": torch.randn(4, 3)}
    layout = Layout(choices=[FULL, parse_choice("linear:jetvit")], fingerprint="arch-x", params=params)
    path = layout.save(tmp_path / "layout.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == "jetvit-layout" and doc["version"] == 1 and doc["params"] == "layout.safetensors"
    back = Layout.coerce(str(path))
    assert back.choices == layout.choices and back.fingerprint == "arch-x"
    assert torch.equal(back.site_params(1)["conv.kernel_mlp.0.weight"], params["site1.conv.kernel_mlp.0.weight"])
    assert back.site_params(0) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout.json", "layout.safetensors"], "no temp files left"


def test_fingerprint_mismatch_is_refused():
    with pytest.raises(UsageError, match="made for another model"):
        Layout(choices=[FULL], fingerprint="arch-a").resolve(1, "arch-b")


def test_fingerprint_ignores_resolution_but_not_architecture():
    def site(tokens, grid, heads=6):
        return AttentionSite(0, "n", "sdpa", heads, 64, tokens, 1, grid, 0.125)
    assert architecture_fingerprint([site(257, (16, 16))]) == architecture_fingerprint([site(1370, (37, 37))])
    assert architecture_fingerprint([site(257, (16, 16))]) != architecture_fingerprint([site(257, (16, 16), 12)])


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"), ('{"choices": []}', "not a jetvit layout"),
    ('{"schema": "jetvit-layout", "version": 9, "choices": []}', "version 9"),
])
def test_bad_layout_files(tmp_path, content, message):
    p = tmp_path / "l.json"
    p.write_text(content)
    with pytest.raises(UsageError, match=message):
        Layout.load(p)


def test_missing_layout_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        Layout.coerce(str(tmp_path / "nope.json"))


def test_choice_strings_round_trip():
    for text in ["full", "window:7", "window:7+pool:4", "window:15+pool:4+route:8", "window:15+pool:4+global:256",
                 "window:15+pool:4+route:8+global:64", "window:15+pool:4+route:8+group:5",
                 "window:15+pool:4+route:8+group:3+global:128", "linear:relu", "linear:jetvit", "linear:hedgehog",
                 "window:19+learned", "window:19+pool:4+learned:0", "window:15+cluster:256",
                 "window:15+cluster:64+full:0.2+learned", "window:15+pool:4+route:8+full:1.2+learned:4"]:
        assert str(parse_choice(text)) == text
        assert parse_choice(str(parse_choice(text))) == parse_choice(text)
    assert parse_choice("window:7") == Choice("window", window=7)
    assert parse_choice("window:15+pool:4+route:8") == Choice("window", window=15, pool=4, route=8)
    assert parse_choice("window:15+pool:4+global:64") == Choice("window", window=15, pool=4, global_tokens=64)
    assert parse_choice("window:15+cluster:256") == Choice("window", window=15, cluster=256)


@pytest.mark.parametrize("content,message", [
    ('{"schema": "jetvit-layout", "version": 1}', "must be a list of strings"),
    ('{"schema": "jetvit-layout", "version": 1, "choices": [1, 2]}', "must be a list of strings"),
    ('{"schema": "jetvit-layout", "version": 1, "choices": ["full"], "params": "l.safetensors"}', "not a readable"),
])
def test_malformed_layout_files_are_usage_errors(tmp_path, content, message):
    (tmp_path / "l.safetensors").write_bytes(b"garbage")
    p = tmp_path / "l.json"
    p.write_text(content)
    with pytest.raises(UsageError, match=message):
        Layout.load(p)


def test_layout_path_that_is_a_folder_and_spaced_overrides(tmp_path):
    with pytest.raises(UsageError, match="cannot read layout file"):
        Layout.load(tmp_path)
    with pytest.raises(UsageError, match="choice@i,j"):
        Layout.parse("window:14;full@5 11")
    assert Layout.parse("window:14;full@ 5, 11").resolve(12)[11] == FULL


def test_written_files_get_normal_permissions(tmp_path):
    import os
    import stat

    path = Layout(choices=[FULL]).save(tmp_path / "l.json")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_learned_choices_and_their_default_rank():
    assert parse_choice("window:19+pool:4+learned") == Choice("window", window=19, pool=4, learned=LEARNED_RANK)
    assert str(Choice("window", window=19, learned=LEARNED_RANK)) == "window:19+learned"
    assert parse_choice("window:19+learned:0").learned == 0
    learned = ["linear:jetvit", "linear:hedgehog", "window:7+learned", "window:7+pool:2+learned:0"]
    assert [parse_choice(t).is_learned for t in learned] == [True] * 4
    assert [parse_choice(t).is_learned for t in ("full", "linear:relu", "window:7+pool:2")] == [False] * 3


def test_choice_help_names_every_learned_choice():
    with pytest.raises(UsageError) as err:
        parse_choice("linear:softmax")
    for name in ("linear:hedgehog", "+learned", "linear:jetvit"):
        assert name in str(err.value)


def test_compact_counts_runs_of_one_choice():
    from jetvit_compile.layout import compact

    layout = Layout.parse("window:15+pool:4;full@2;linear:hedgehog@4,5")
    assert compact(layout.resolve(7)) == "window:15+pool:4 x2 | full | window:15+pool:4 | linear:hedgehog x2 | window:15+pool:4"
    assert compact(["full"]) == "full"
