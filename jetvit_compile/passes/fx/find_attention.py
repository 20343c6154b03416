"""Find every attention site in a torch.export graph, from the graph alone (no module names).

Forms matched (alternatives of one rule, not copies):
* ``aten.scaled_dot_product_attention`` and its flash / efficient / cudnn / CPU-flash variants;
* the explicit chain ``matmul(q, kᵀ) → (× scale) → (+ mask) → softmax → (dropout) → matmul(·, v)``,
  with ``aten.matmul`` on ``[B, H, N, D]`` tensors or, after ``run_decompositions``, ``aten.bmm`` on
  ``[B·H, N, D]`` views of them. Scalar factors on q, on kᵀ and on the scores fold into one scale.
A mask is accepted only when it is a constant that changes nothing (all-True / all-zero), as exporters
emit for unpadded images; anything else is refused with the reason.
"""
from __future__ import annotations

import dataclasses
import math
import operator

import torch
from torch import fx

from ...sites import AttentionSite, grid_and_prefix
from .graph_utils import PASS_THROUGH, RESHAPES, bind, constant_value, is_identity_mask, scalar, shape_of, upstream

aten = torch.ops.aten

_SDPA = {
    aten.scaled_dot_product_attention.default: "sdpa",
    aten._scaled_dot_product_flash_attention.default: "sdpa_flash",
    aten._scaled_dot_product_flash_attention_for_cpu.default: "sdpa_flash",
    aten._scaled_dot_product_efficient_attention.default: "sdpa_efficient",
    aten._scaled_dot_product_cudnn_attention.default: "sdpa_cudnn",
}
_SOFTMAX = {aten.softmax.int, aten._softmax.default, aten._safe_softmax.default}
_MATMUL = {aten.matmul.default, aten.bmm.default}
_SCALE_MUL = {aten.mul.Tensor, aten.mul.Scalar}
_SCALE_DIV = {aten.div.Tensor, aten.div.Scalar}
_CONV = {aten.conv2d.default, aten.convolution.default}
# where a walk up from q/k stops: the projection (or the input) that produced the tokens
_PROJECTIONS = {aten.linear.default, aten.addmm.default, aten.mm.default, aten.layer_norm.default,
                aten.native_layer_norm.default}
_ROPE_OPS = {aten.neg.default, aten.sin.default, aten.cos.default}


@dataclasses.dataclass
class FxHandles:
    """The nodes a rewrite needs: q, k, v as ``[B, H, N, D]`` and the node whose value is the output."""

    q: fx.Node
    k: fx.Node
    v: fx.Node
    out: fx.Node
    k_transposed: bool = False  # ``k`` holds kᵀ ``[B, H, D, N]``


class _Refused(Exception):
    pass


def _strip_scalars(node: fx.Node) -> tuple[fx.Node, float]:
    """Walk up through ``× s`` / ``÷ s`` by Python scalars; return the source and the product."""
    factor = 1.0
    while isinstance(node, fx.Node) and node.op == "call_function":
        if node.target in _SCALE_MUL and scalar(node.args[1]) is not None:
            factor *= scalar(node.args[1])  # type: ignore[operator]
        elif node.target in _SCALE_MUL and scalar(node.args[0]) is not None:
            factor *= scalar(node.args[0])  # type: ignore[operator]
            node = node.args[1]
            continue
        elif node.target in _SCALE_DIV and scalar(node.args[1]) is not None:
            factor /= scalar(node.args[1])  # type: ignore[operator]
        elif node.target in RESHAPES and shape_of(node) == shape_of(node.args[0]):
            pass  # a no-op expand / clone between the scaling and the matmul
        else:
            break
        node = node.args[0]
    return node, factor


def _to_4d(node: fx.Node) -> fx.Node:
    """The ``[B, H, N, D]`` tensor a ``[B·H, N, D]`` bmm operand is a view of."""
    n = node
    while len(shape_of(n) or ()) != 4:
        if not (isinstance(n, fx.Node) and n.op == "call_function" and n.target in RESHAPES):
            raise _Refused(f"{node.name}: cannot find the [B, H, N, D] tensor behind this bmm operand")
        n = n.args[0]
    return n


def _is_last_two_swap(node: fx.Node) -> bool:
    if node.target == aten.transpose.int:
        dims = {d % 4 for d in node.args[1:3]}
        return dims == {2, 3}
    if node.target == aten.permute.default:
        return list(node.args[1]) == [0, 1, 3, 2]
    return False


def _mask_ok(gm: fx.GraphModule, mask) -> None:
    if mask is None:
        return
    if not is_identity_mask(constant_value(gm, mask)):
        raise _Refused("the attention mask depends on the input or masks tokens out; only unmasked "
                       "self-attention can be rewritten")


def _match_sdpa(gm: fx.GraphModule, node: fx.Node) -> tuple[FxHandles, float]:
    a = bind(node)
    if a.get("is_causal"):
        raise _Refused("causal attention is not a ViT's bidirectional attention")
    _mask_ok(gm, a.get("attn_mask", a.get("attn_bias")))
    q, k, v = a["query"], a["key"], a["value"]
    out = node
    if node.target != aten.scaled_dot_product_attention.default:  # tuple-returning variants
        firsts = [u for u in node.users if u.target is operator.getitem and u.args[1] == 0]
        if not firsts:
            raise _Refused("the attention output is never used")
        out = firsts[0]
    d = shape_of(q)[-1]  # type: ignore[index]
    scale = a.get("scale")
    return FxHandles(q, k, v, out), float(scale) if scale is not None else 1.0 / math.sqrt(d)


def _masked_row_guard(p: fx.Node) -> fx.Node | None:
    """Decomposed sdpa zeroes fully masked rows: ``where(all_masked, full_like(p, 0), p)``.

    With the identity masks accepted here no row is fully masked, so the guard is a pass-through.
    """
    users = list(p.users)
    wheres = [u for u in users if u.target == aten.where.self and u.args[2] is p]
    fills = [u for u in users if u.target == aten.full_like.default]
    if len(wheres) == 1 and len(fills) == 1 and len(users) == 2 and wheres[0].args[1] is fills[0]:
        return wheres[0]
    return None


def _match_chain(gm: fx.GraphModule, softmax: fx.Node) -> tuple[FxHandles, float]:
    """``softmax`` node → handles of the matmul-softmax-matmul chain around it."""
    dim = softmax.args[1] if len(softmax.args) > 1 else -1
    rank = len(shape_of(softmax) or ())
    if dim % max(rank, 1) != rank - 1:
        raise _Refused(f"softmax over dim {dim}, not over the keys")
    x, scale = _strip_scalars(softmax.args[0])
    while x.op == "call_function" and (x.target == aten.add.Tensor or x.target in RESHAPES):
        if x.target in RESHAPES:  # decomposed graphs view [B·H, N, N] scores as [B, H, N, N] and back
            x, s = _strip_scalars(x.args[0])
        else:
            scores = [a for a in x.args if isinstance(a, fx.Node) and constant_value(gm, a) is None]
            if len(scores) != 1:
                raise _Refused("scores plus a mask that is not constant")
            _mask_ok(gm, next(a for a in x.args if a is not scores[0]))
            x, s = _strip_scalars(scores[0])
        scale *= s
    if x.target not in _MATMUL:
        raise _Refused(f"softmax input comes from {x.target}, not from q·kᵀ")
    q, kt = x.args[0], x.args[1]
    if x.target == aten.bmm.default:
        q, kt = _to_4d(q), _to_4d(kt)
    q, sq = _strip_scalars(q)
    kt, sk = _strip_scalars(kt)
    # downstream: probabilities (through dropout / casts) times v
    p = softmax
    while True:
        users = list(p.users)
        guard = _masked_row_guard(p)
        if guard is not None:
            users = [guard]
        if len(users) != 1:
            raise _Refused("attention probabilities are used more than once")
        u = users[0]
        if u is guard:
            p = u
            continue
        if u.target in PASS_THROUGH or u.target in RESHAPES:
            p = u
        elif u.target == aten.native_dropout.default:
            p = next(iter(u.users))
        elif u.target in _MATMUL and u.args[0] is p:
            out, v = u, u.args[1]
            break
        else:
            raise _Refused(f"attention probabilities feed {u.target}, not a matmul with v")
    if x.target == aten.bmm.default:
        v = _to_4d(v)
        views = [w for w in out.users if len(shape_of(w) or ()) == 4 and w.target in RESHAPES]
        if len(views) != 1:
            raise _Refused("cannot find the [B, H, N, D] view of the bmm attention output")
        out = views[0]
    if _is_last_two_swap(kt):
        return FxHandles(q, kt.args[0], v, out), scale * sq * sk
    return FxHandles(q, kt, v, out, k_transposed=True), scale * sq * sk


def patch_grid(gm: fx.GraphModule) -> tuple[int, int] | None:
    """Output size of the first convolution whose stride equals its kernel: the patch embedding."""
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target not in _CONV:
            continue
        a = bind(n)
        kernel = shape_of(n.args[1])
        stride = list(a.get("stride") or [1])
        if kernel and len(kernel) == 4 and max(kernel[2:]) > 1 and stride * (2 // len(stride)) == list(kernel[2:]):
            out = shape_of(n)
            return (int(out[2]), int(out[3])) if out else None
    return None


def _image_hw(gm: fx.GraphModule) -> tuple[int, int] | None:
    """(H, W) of the first 4-D input: what a grid is read from when no convolution makes it."""
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            shape = shape_of(n)
            if shape and len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
                return int(shape[2]), int(shape[3])
    return None


def _has_rope(node: fx.Node) -> bool:
    return any(n.target in _ROPE_OPS for n in upstream(node, _PROJECTIONS))


def find_attention(gm: fx.GraphModule, grid: tuple[int, int] | None = None) -> tuple[list[AttentionSite], list[str]]:
    """All attention sites of ``gm`` in graph order, and the reasons for each structure refused."""
    sites: list[AttentionSite] = []
    refused: list[str] = []
    conv_grid, image_hw = patch_grid(gm), _image_hw(gm)
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        try:
            if node.target in _SDPA:
                (handles, scale), form = _match_sdpa(gm, node), _SDPA[node.target]
            elif node.target in _SOFTMAX:
                (handles, scale), form = _match_chain(gm, node), "matmul_softmax"
            else:
                continue
            qs, vs = shape_of(handles.q), shape_of(handles.v)
            if not qs or len(qs) != 4 or qs != vs:
                raise _Refused(f"q {qs} and v {vs} are not both [B, H, N, D] of one shape (cross-attention?)")
            if not all(isinstance(s, int) for s in qs):
                raise _Refused("symbolic shapes: export with a static input size (no dynamic_shapes)")
        except _Refused as e:
            refused.append(f"{node.name}: {e}")
            continue
        b, h, n, d = qs
        where = f"attention site {len(sites)} ({node.name})"
        site_grid, prefix = grid_and_prefix(n, grid, where, conv_grid=conv_grid, image_hw=image_hw)
        sites.append(AttentionSite(
            index=len(sites), name=node.name, form=form, num_heads=h, head_dim=d, tokens=n,
            num_prefix_tokens=prefix, grid=site_grid, scale=scale, has_rope=_has_rope(handles.q),
            batch=b, dtype=str(handles.q.meta["val"].dtype).removeprefix("torch."), handles=handles,
        ))
    return sites, refused
