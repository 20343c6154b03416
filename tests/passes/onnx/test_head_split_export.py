"""A head split exports once per number of full heads: every subset of that size reuses the export with its
own head indices, and computes what its torch reference computes (the head trim scores many subsets)."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import torch

from jetvit_compile._onnxruntime import cpu_session
from jetvit_compile.attention import build_attention
from jetvit_compile.layout import parse_choice
from jetvit_compile.passes.onnx import replacement
from jetvit_compile.sites import AttentionSite

SITE = AttentionSite(0, "", "", 6, 16, 65, 1, (8, 8), 0.25, dtype="float32")


def _run(graph: ir.Graph, q, k, v) -> np.ndarray:
    blob = ir.to_proto(ir.Model(graph, ir_version=10)).SerializeToString()
    return cpu_session(blob).run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()})[0]


@pytest.mark.parametrize("ort_kernels", [False, True])
def test_subsets_of_one_size_share_an_export_and_keep_their_own_heads(ort_kernels):
    replacement._export.cache_clear()
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 6, 65, 16) for _ in range(3))
    for heads in ["0.1", "2.5", "1.4", "3.4"]:
        choice = parse_choice(f"window:4+pool:2+full:{heads}")
        graph = replacement.replacement_graph(SITE, choice, {}, False, "BHND", ort_kernels=ort_kernels)
        expected = build_attention(choice, SITE)(q, k, v).numpy()
        assert np.abs(_run(graph, q, k, v) - expected).max() < 1e-4, heads
    assert replacement._export.cache_info().misses == 1, "one export for all four 2-head subsets"


def test_a_split_whose_indices_cannot_be_found_is_exported_as_it_is():
    # one full head: the template's index [0] is a constant that Slices read too, so it cannot be moved
    replacement._export.cache_clear()
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 6, 65, 16) for _ in range(3))
    for heads in ["0", "3"]:
        choice = parse_choice(f"window:4+pool:2+full:{heads}")
        graph = replacement.replacement_graph(SITE, choice, {}, False, "BHND")
        expected = build_attention(choice, SITE)(q, k, v).numpy()
        assert np.abs(_run(graph, q, k, v) - expected).max() < 1e-4, heads
    assert replacement._export.cache_info().misses == 2, "the template, then head 3 exported as it is"
