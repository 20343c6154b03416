"""Find the attention blocks of an ONNX ViT graph and describe each as an AttentionSite.

Each form attention takes in real exports is anchored on one node and matched from there:
  * ``onnx_matmul_softmax``: Softmax between MatMul(q·s, kᵀ·s) and MatMul(·, v) (TorchScript and
    dynamo exporters, eager and sdpa); scalar Mul/Div on q, kᵀ and the scores fold into one scale,
    an all-zero additive mask and the dynamo NaN guard (Where(IsNaN(p), 0, p)) are let through;
  * ``onnx_attention``: the opset-23 ``Attention`` op, 4-D or 3-D inputs;
  * ``onnx_mha``: ``com.microsoft.MultiHeadAttention`` (onnxscript's ORT fusions, ONNX Runtime tools);
  * ``onnx_ms_attention``: ``com.microsoft.Attention``, the same fusion with the QKV projection packed
    in (what ``ort_fusions.optimize_for_ort`` makes of Dinov2).
Anything attention-like that does not fit is refused with the reason, never silently skipped.
"""
from __future__ import annotations

import dataclasses
import math

import onnx
import onnx_ir as ir

from ...errors import UnsupportedModelError
from ...sites import AttentionSite, grid_and_prefix
from ._graph_facts import (find_bhnd, fmt, has_rope, is_no_mask, patch_grid, peel_scale, scalar_operand, single_use,
                           skip_guards)
from .input_shape import Shapes

FORM_MATMUL_SOFTMAX = "onnx_matmul_softmax"
FORM_ATTENTION = "onnx_attention"
FORM_MHA = "onnx_mha"
FORM_MS_ATTENTION = "onnx_ms_attention"


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class OnnxAttentionHandles:
    """The IR objects a rewrite of one site needs; they belong to the ir.Model given to find_attention.

    ``q``/``k``/``v`` are ``[B, H, N, D]`` values where the graph has them (unscaled: the site's
    ``scale`` is the whole softmax scale). The TorchScript exporter builds kᵀ straight from
    ``[B, N, H, D]``, so ``k`` can be None while ``k_transposed`` (``[B, H, D, N]``) exists. Fused ops
    take [B, N, C] inputs: their q/k/v are the head-layout tensors upstream where the graph has them
    (none with MultiHeadAttention's fused ``bias``, or com.microsoft.Attention's packed projection);
    ``inputs`` always lists the op's own inputs.
    """

    output: ir.Value  # the attention result, in output_layout
    output_layout: str  # "BHND", or "BNC" (heads merged, as the fused ops return it)
    # The matched chain, from the q/kᵀ scaling to the output MatMul (or the fused op): dead once
    # output's uses are rerouted. Producers that die with it (kᵀ transposes, a shared all-zero
    # mask) are left to unused-node removal.
    nodes: tuple[ir.Node, ...]
    q: ir.Value | None = None
    k: ir.Value | None = None
    k_transposed: ir.Value | None = None
    v: ir.Value | None = None
    inputs: tuple[ir.Value | None, ...] = ()  # a fused op's inputs, in the op's own order

    # Copies are the same object: IR values cannot be copied (their tensors may be memory-mapped)
    # and a copied value would point into no graph.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def rebind(self, values: dict[str, ir.Value]) -> "OnnxAttentionHandles":
        """The same handles in a copy of their model (``values``: that copy's values by name)."""
        def get(v: ir.Value | None) -> ir.Value | None:
            return None if v is None else values[v.name]

        return dataclasses.replace(self, output=get(self.output), nodes=(), q=get(self.q), k=get(self.k),
                                   k_transposed=get(self.k_transposed), v=get(self.v),
                                   inputs=tuple(get(v) for v in self.inputs))

    def __repr__(self) -> str:
        named = {f: getattr(self, f) for f in ("q", "k", "k_transposed", "v", "output")}
        shown = ", ".join(f"{f}={v.name if v is not None else None!r}" for f, v in named.items())
        return f"OnnxAttentionHandles({shown}, layout={self.output_layout}, nodes={len(self.nodes)})"


@dataclasses.dataclass
class _Match:
    form: str
    handles: OnnxAttentionHandles
    heads: int
    head_dim: int
    tokens: int | None
    batch: int | None
    scale: float
    rope: bool
    dtype: ir.DataType | None


def find_attention(model: ir.Model | onnx.ModelProto,
                   grid: tuple[int, int] | None = None) -> tuple[list[AttentionSite], list[str]]:
    """Sites in graph order, and a reason for every attention-like structure that was refused.

    ``grid`` overrides the patch grid read from the patch-embedding Conv. Handles point into
    ``model`` when it is an ``ir.Model`` (a ModelProto is converted first, so pass an ir.Model to
    rewrite). The model is not changed. Raises UnsupportedModelError when a site's token count or
    the grid cannot be told (see set_input_shapes); an empty list means no attention at all.
    """
    ir_model = ir.serde.deserialize_model(model) if isinstance(model, onnx.ModelProto) else model
    shapes = Shapes(ir_model)
    matches: list[_Match] = []
    refusals: list[str] = []
    for node in ir_model.graph:
        matcher = _MATCHERS.get((node.domain if node.domain != "ai.onnx" else "", node.op_type))
        result = matcher(node, shapes) if matcher else None
        if isinstance(result, str):
            refusals.append(result)
        elif result is not None:
            matches.append(result)
    if not matches:
        return [], refusals
    conv_grid = patch_grid(ir_model.graph, shapes)
    image = next((v for v in ir_model.graph.inputs if v.name not in ir_model.graph.initializers
                  and len(shapes(v) or ()) == 4), None)
    image_hw = tuple(shapes(image)[2:]) if image is not None else None
    example = next(iter(ir_model.graph.inputs), None)
    sites = []
    for index, m in enumerate(matches):
        name = m.handles.output.producer().name or ""
        where = f"attention site {index} (ONNX node {name!r})"
        if m.tokens is None:
            raise UnsupportedModelError(
                f"{where}: the token count is not fixed by the graph (symbolic input height/width?); "
                f"set concrete input shapes first, e.g. set_input_shapes(model, "
                f"'{example.name if example else 'input'}:1x3x518x518')"
            )
        site_grid, prefix = grid_and_prefix(m.tokens, grid, where, conv_grid=conv_grid, image_hw=image_hw)
        sites.append(AttentionSite(
            index=index, name=name, form=m.form, num_heads=m.heads, head_dim=m.head_dim,
            tokens=m.tokens, num_prefix_tokens=prefix, grid=site_grid, scale=m.scale,
            has_rope=m.rope, batch=m.batch or 1,
            dtype=str(m.dtype.numpy()) if m.dtype is not None else "float32", handles=m.handles,
        ))
    return sites, refusals


def _match_softmax(softmax: ir.Node, shapes: Shapes) -> _Match | str | None:
    where = f"Softmax node {softmax.name!r}"
    dims = shapes(softmax.inputs[0])
    if dims is not None and len(dims) < 3:
        return None  # a classifier's softmax over classes: not attention-like at all
    # before opset 13 Softmax defaults to axis 1 (of a 2-D flattening): not the key axis
    axis = softmax.attributes.get_int("axis", -1 if softmax.graph.opset_imports.get("", 13) >= 13 else 1)
    if dims is not None and axis not in (-1, len(dims) - 1):
        return f"{where}: softmax over axis {axis}, not the key axis"
    nodes, scale = [softmax], 1.0
    scores = softmax.inputs[0]
    while (node := scores.producer()) is not None and node.op_type in ("Mul", "Div", "Add", "Cast"):
        if not single_use(scores):
            return f"{where}: the attention scores are also used outside the attention"
        nodes.append(node)
        if node.op_type == "Cast":
            scores = node.inputs[0]
        elif node.op_type == "Add":
            zero = [i for i, x in enumerate(node.inputs) if is_no_mask(x)]
            if not zero:
                return f"{where}: the scores get a mask or bias ({node.name!r}) that is not all zero; masked attention is not supported"
            scores = node.inputs[1 - zero[0]]
        else:
            scores, factor = scalar_operand(node)
            if scores is None:
                return f"{where}: the scores are scaled by {node.op_type} node {node.name!r} with a factor that is not a constant scalar"
            scale *= factor
    matmul = scores.producer()
    if matmul is None or matmul.op_type != "MatMul" or not single_use(scores):
        source = f"{matmul.op_type} node {matmul.name!r}" if matmul else "a graph input"
        return f"{where}: scores do not come from a MatMul of two [B,H,N,D] tensors (they come from {source})"
    nodes.append(matmul)
    q, q_scale = peel_scale(matmul.inputs[0], nodes)
    k_t, k_scale = peel_scale(matmul.inputs[1], nodes)
    probs = skip_guards(softmax.outputs[0], nodes)
    users = probs.consumers()
    if len(users) != 1 or users[0].op_type != "MatMul" or users[0].inputs[0] is not probs or probs.is_graph_output():
        return f"{where}: the attention probabilities do not feed exactly one MatMul with v (are they also returned?)"
    out_matmul = users[0]
    nodes.append(out_matmul)
    v = out_matmul.inputs[1]
    qd, kd, vd = shapes(q), shapes(k_t), shapes(v)
    if not (qd and kd and vd and len(qd) == len(kd) == len(vd) == 4
            and qd[1] == kd[1] == vd[1] and qd[3] == kd[2] == vd[3] and kd[3] == vd[2]):
        return (f"{where}: scores do not come from a MatMul of two [B,H,N,D] tensors "
                f"(q {fmt(qd)}, kᵀ {fmt(kd)}, v {fmt(vd)})")
    heads, tokens, head_dim = qd[1], qd[2], qd[3]
    if heads is None or head_dim is None:
        return f"{where}: the number of heads or the head dim is symbolic (q {fmt(qd)})"
    if _cross_attention(tokens, kd[3]):
        return f"{where}: {_cross_attention(tokens, kd[3])}"
    handles = OnnxAttentionHandles(
        output=out_matmul.outputs[0], output_layout="BHND", nodes=tuple(nodes), q=q,
        k=find_bhnd(k_t, heads, tokens, head_dim, shapes), k_transposed=k_t, v=v)
    return _Match(FORM_MATMUL_SOFTMAX, handles, heads, head_dim, tokens, qd[0], scale * q_scale * k_scale,
                  has_rope(q) and has_rope(k_t), q.dtype)


def _match_onnx_attention(node: ir.Node, shapes: Shapes) -> _Match | str:
    where = f"Attention node {node.name!r}"
    q, k, v, mask = (list(node.inputs) + [None] * 4)[:4]
    attrs = node.attributes
    if any(x is not None for x in node.inputs[4:]):
        return f"{where}: has a KV cache or padding input; not a ViT self-attention site"
    if attrs.get_int("is_causal", 0) or attrs.get_float("softcap", 0.0):
        return f"{where}: causal or soft-capped attention is not supported"
    if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
        return f"{where}: its present_key / present_value / qk outputs are used"
    if mask is not None and not is_no_mask(mask):
        return f"{where}: has an attention mask that masks something; masked attention is not supported"
    qd, kd = shapes(q), shapes(k)
    if qd and len(qd) == 4 and kd and len(kd) == 4:
        heads, kv_heads, tokens, keys, head_dim, layout = qd[1], kd[1], qd[2], kd[2], qd[3], "BHND"
    elif qd and len(qd) == 3 and kd and len(kd) == 3 and qd[2] and "q_num_heads" in attrs:
        heads, kv_heads = attrs.get_int("q_num_heads"), attrs.get_int("kv_num_heads")
        tokens, keys, head_dim, layout = qd[1], kd[1], qd[2] // heads, "BNC"
    else:
        return f"{where}: cannot tell heads and head dim from q {fmt(qd)}, k {fmt(kd)}"
    if heads is None or head_dim is None or heads != kv_heads:
        return f"{where}: {heads} query heads vs {kv_heads} key/value heads (grouped-query or symbolic) is not supported"
    if _cross_attention(tokens, keys):
        return f"{where}: {_cross_attention(tokens, keys)}"
    q4, k4, v4 = (q, k, v) if layout == "BHND" else (find_bhnd(x, heads, tokens, head_dim, shapes) for x in (q, k, v))
    handles = OnnxAttentionHandles(output=node.outputs[0], output_layout=layout, nodes=(node,),
                                   q=q4, k=k4, v=v4, inputs=tuple(node.inputs))
    scale = attrs.get_float("scale", None) or 1 / math.sqrt(head_dim)
    return _Match(FORM_ATTENTION, handles, heads, head_dim, tokens, qd[0], scale, has_rope(q) and has_rope(k), q.dtype)


def _match_ms_mha(node: ir.Node, shapes: Shapes) -> _Match | str:
    where = f"com.microsoft.MultiHeadAttention node {node.name!r}"
    query, key, value, bias, padding, attn_bias = (list(node.inputs) + [None] * 6)[:6]
    refused = _ms_refusal(where, node, attn_bias, padding, node.inputs[6:])
    if refused:
        return refused
    if key is None or value is None:
        return f"{where}: packed QKV input is not supported"
    heads, qd, kd = node.attributes.get_int("num_heads", 0), shapes(query), shapes(key)
    if not heads or not qd or len(qd) != 3 or qd[2] is None or not kd:
        return f"{where}: cannot tell heads and head dim (num_heads {heads}, query {fmt(qd)})"
    tokens, head_dim = qd[1], qd[2] // heads
    keys = kd[2] if len(kd) == 4 else kd[1]  # key may come in head layout (BNSH)
    if _cross_attention(tokens, keys):
        return f"{where}: {_cross_attention(tokens, keys)}"

    def bhnd(x):  # with a fused bias the head-layout tensors upstream lack it: hand out none
        dims = shapes(x)
        return x if dims and len(dims) == 4 else (None if bias is not None else find_bhnd(x, heads, tokens, head_dim, shapes))

    handles = OnnxAttentionHandles(output=node.outputs[0], output_layout="BNC", nodes=(node,),
                                   q=bhnd(query), k=bhnd(key), v=bhnd(value), inputs=tuple(node.inputs))
    scale = node.attributes.get_float("scale", 0.0) or 1 / math.sqrt(head_dim)
    return _Match(FORM_MHA, handles, heads, head_dim, tokens, qd[0], scale, has_rope(query) and has_rope(key), query.dtype)


def _match_ms_attention(node: ir.Node, shapes: Shapes) -> _Match | str:
    where = f"com.microsoft.Attention node {node.name!r}"
    x, weights, _, mask_index, past, attn_bias = (list(node.inputs) + [None] * 6)[:6]
    refused = _ms_refusal(where, node, attn_bias, mask_index, [past, *node.inputs[6:]])
    if refused:
        return refused
    heads, xd, wd = node.attributes.get_int("num_heads", 0), shapes(x), shapes(weights)
    sizes = node.attributes.get_ints("qkv_hidden_sizes", None) or ((wd[1] // 3,) * 3 if wd and wd[1] else None)
    if not heads or not sizes or len(set(sizes)) != 1 or not xd or len(xd) != 3:
        return f"{where}: cannot tell tokens and head dim (input {fmt(xd)}, qkv_hidden_sizes {sizes})"
    head_dim = sizes[0] // heads
    handles = OnnxAttentionHandles(output=node.outputs[0], output_layout="BNC", nodes=(node,), inputs=tuple(node.inputs))
    scale = node.attributes.get_float("scale", 0.0) or 1 / math.sqrt(head_dim)
    return _Match(FORM_MS_ATTENTION, handles, heads, head_dim, xd[1], xd[0], scale,
                  bool(node.attributes.get_int("do_rotary", 0)), x.dtype)


def _ms_refusal(where, node, attn_bias, padding, cache) -> str | None:
    if node.attributes.get_int("unidirectional", 0):
        return f"{where}: causal (unidirectional) attention is not supported"
    if padding is not None or (attn_bias is not None and not is_no_mask(attn_bias)):
        return f"{where}: has a padding mask or attention bias; masked attention is not supported"
    if any(x is not None for x in cache):
        return f"{where}: has a KV cache; not a ViT self-attention site"
    return None


def _cross_attention(queries: int | None, keys: int | None) -> str | None:
    if None in (queries, keys) or queries == keys:
        return None
    return f"{queries} queries attend to {keys} keys; cross-attention is not a ViT self-attention site"


_MATCHERS = {
    ("", "Softmax"): _match_softmax,
    ("", "Attention"): _match_onnx_attention,
    ("com.microsoft", "MultiHeadAttention"): _match_ms_mha,
    ("com.microsoft", "Attention"): _match_ms_attention,
}
