import math

import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F

from jetvit_compile.attention.core import attend, onnx_export_form
from jetvit_compile.layout import parse_choice
from jetvit_compile.passes.onnx.replacement import replacement_graph
from jetvit_compile.passes.onnx.pipeline import ONNXRUNTIME, PORTABLE
from jetvit_compile.profiles.measure import onnx_block
from jetvit_compile.sites import AttentionSite


def test_folded_key_bias_is_the_same_maths_as_the_masked_sdpa():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 6, 25, 8), torch.randn(2, 6, 40, 8), torch.randn(2, 6, 40, 8)
    bias = torch.log(torch.randint(1, 17, (1, 6, 1, 40)).float())
    bias[..., :7] = -math.inf  # masked keys (padding, routed-away tokens)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.3)
    assert torch.equal(attend(q, k, v, 0.3, bias), expected)  # outside the context: the sdpa itself
    with onnx_export_form():
        folded = attend(q, k, v, 0.3, bias)
        unbiased = attend(q, k, v, 0.3)
    assert (folded - expected).abs().max() < 1e-5
    assert (unbiased - F.scaled_dot_product_attention(q, k, v, scale=0.3)).abs().max() < 1e-5
    # the masked keys really are out: changing their values changes nothing
    v2 = v.clone()
    v2[:, :, :7] = 1e3
    with onnx_export_form():
        assert (attend(q, k, v2, 0.3, bias) - folded).abs().max() < 1e-5


def test_exported_window_blocks_softmax_their_logits_with_no_bias_add():
    """ONNX Runtime spends as long on a logits-sized Add as on the Softmax: the exported window blocks fold
    the per-key bias into q and k, so every Softmax reads a MatMul's output directly."""
    site = AttentionSite(0, "s", "sdpa", 6, 8, 1 + 20 * 20, 1, (20, 20), 8 ** -0.5)  # 15 does not tile 20: padding
    for choice in ["window:15", "window:15+pool:4", "window:15+pool:4+route:4+global:16"]:
        graph = replacement_graph(site, parse_choice(choice), {}, False, "BHND")
        producer = {out.name: node for node in graph for out in node.outputs}
        softmaxes = [n for n in graph if n.op_type == "Softmax"]
        assert softmaxes, choice
        assert all(producer[n.inputs[0].name].op_type == "MatMul" for n in softmaxes), (
            choice, [producer[n.inputs[0].name].op_type for n in softmaxes])


def test_ort_kernels_run_full_attention_as_multi_head_attention_and_leave_window_cores_plain():
    site = AttentionSite(0, "s", "sdpa", 6, 8, 1 + 20 * 20, 1, (20, 20), 8 ** -0.5)
    feed = {name: x.numpy() for name, x in zip("qkv", torch.randn(3, 1, 6, 401, 8))}
    for choice, kernels in [("full", 1), ("window:15+pool:4+full:1.4", 1), ("window:15+pool:4", 0)]:
        plain, lowered = (onnx_block(site, parse_choice(choice), lowering) for lowering in (PORTABLE, ONNXRUNTIME))
        ops = [n.op_type for n in onnx.load_model_from_string(lowered).graph.node]
        assert ops.count("MultiHeadAttention") == kernels, (choice, ops)
        assert "MultiHeadAttention" not in [n.op_type for n in onnx.load_model_from_string(plain).graph.node]
        want, got = (ort.InferenceSession(b, providers=["CPUExecutionProvider"]).run(None, feed)[0]
                     for b in (plain, lowered))
        assert abs(want - got).max() < 1e-5, choice
