"""Small facts read off an ONNX IR graph (constants, the patch grid, RoPE, head-layout tensors) and
the matching steps find_attention repeats. Nothing here changes the model it reads.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .input_shape import Dims, Shapes


def const_array(value: ir.Value | None, depth: int = 4) -> np.ndarray | None:
    """The value as a numpy array when the graph fixes it, else None.

    Beyond initializers and Constant nodes this evaluates Where/Expand/Cast/Not of constants (a few
    levels deep), because exporters build the "no mask" additive attention mask that way
    (Where(all_true, 0, -inf)).
    """
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is not None:
        return tensor.numpy()
    node = value.producer()
    if depth == 0 or node is None or node.domain not in ("", "ai.onnx") or node.op_type not in _EVALUATED:
        return None
    args = [const_array(v, depth - 1) for v in node.inputs]
    if any(a is None for a in args):
        return None
    if node.op_type == "Where":
        return np.where(*args)
    if node.op_type == "Expand":
        return args[0] * np.ones(tuple(args[1]), dtype=args[0].dtype)
    if node.op_type == "Cast":
        return args[0].astype(ir.DataType(node.attributes.get_int("to")).numpy())
    return np.logical_not(args[0])  # Not


_EVALUATED = {"Where", "Expand", "Cast", "Not"}


def const_scalar(value: ir.Value | None) -> float | None:
    """A one-element constant as a float (scales are scalars or shape-[1] tensors)."""
    array = const_array(value)
    if array is None or array.size != 1 or array.dtype.kind not in "fiu":
        return None
    return float(array.reshape(()))


def single_use(value: ir.Value) -> bool:
    return len(value.uses()) == 1 and not value.is_graph_output()


def scalar_operand(node: ir.Node) -> tuple[ir.Value | None, float]:
    """For Mul/Div by a constant scalar: (the other operand, factor it multiplies by)."""
    a, b = node.inputs
    if node.op_type == "Div":
        c = const_scalar(b)
        return (a, 1.0 / c) if c else (None, 1.0)
    for x, c in ((a, const_scalar(b)), (b, const_scalar(a))):
        if c is not None:
            return x, c
    return None, 1.0


def is_no_mask(value: ir.Value | None) -> bool:
    """A constant mask that masks nothing: all True (boolean) or all zero (additive)."""
    array = const_array(value)
    if array is None:
        return False
    return bool(array.all()) if array.dtype == bool else not array.any()


def names_read(graph: ir.Graph) -> set[str]:
    """The names of the values some node (subgraphs included) reads, and of the graph's outputs."""
    read = {v.name for node in ir.traversal.RecursiveGraphIterator(graph) for v in node.inputs if v is not None}
    return read | {v.name for v in graph.outputs}


def fmt(dims: Dims | None) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]" if dims else "[?]"


def patch_grid(graph: ir.Graph, shapes: Shapes) -> tuple[int, int] | None:
    """(H, W) of the patch-embedding output: the first Conv whose strides equal its kernel (> 1)."""
    for node in graph:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        weight = shapes(node.inputs[1])
        kernel = node.attributes.get_ints("kernel_shape", weight[2:] if weight else None)
        strides = node.attributes.get_ints("strides", None)
        if kernel is None or strides is None or tuple(kernel) != tuple(strides) or max(kernel) <= 1:
            continue
        out = shapes(node.outputs[0])
        if out is None or len(out) != 4 or None in out[2:]:
            return None
        return int(out[2]), int(out[3])
    return None


# Ops RoPE's rotate-half passes through between the q/k projection and the attention.
_FOLLOW_DATA_INPUT = {"Reshape", "Transpose", "Split", "Slice", "Squeeze", "Unsqueeze", "Cast", "Identity", "Expand"}
_FOLLOW_ALL_INPUTS = {"Mul", "Add", "Sub", "Div", "Neg", "Concat"}


def has_rope(start: ir.Value | None, max_nodes: int = 64) -> bool:
    """Whether ``start`` is computed through a rotary embedding after its projection.

    Walks producers through elementwise / layout ops only (it stops at MatMul, Gemm, norms, Cos/Sin,
    constants), so it stays between the projection and the attention. RoPE shows as the Neg of
    rotate-half (``cat(-x2, x1)``) or as a fused RotaryEmbedding op (ai.onnx 23, com.microsoft).
    """
    todo, seen = [start], set()
    while todo and len(seen) < max_nodes:
        value = todo.pop()
        node = value.producer() if value is not None else None
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type in ("Neg", "RotaryEmbedding"):
            return True
        if node.op_type in _FOLLOW_DATA_INPUT:
            todo.append(node.inputs[0])
        elif node.op_type in _FOLLOW_ALL_INPUTS:
            todo.extend(node.inputs)
    return False


def find_bhnd(value: ir.Value | None, heads: int, tokens: int | None, head_dim: int, shapes: Shapes,
              max_nodes: int = 4) -> ir.Value | None:
    """The [B, H, N, D] tensor that ``value`` is a reshape / transpose of, if there is one.

    Used to hand rewrites q/k/v in head layout where the graph only shows a derived form:
    kᵀ built as Reshape-Transpose-Reshape (dynamo sdpa), or MultiHeadAttention's [B, N, C] inputs.
    """
    for _ in range(max_nodes):
        node = value.producer() if value is not None else None
        if node is None or node.op_type not in ("Reshape", "Transpose"):
            return None
        value = node.inputs[0]
        dims = shapes(value)
        if dims and len(dims) == 4 and dims[1] == heads and dims[3] == head_dim and dims[2] in (tokens, None):
            return value
    return None


def peel_scale(value: ir.Value, nodes: list[ir.Node]) -> tuple[ir.Value, float]:
    """Strip scalar Mul/Div on q or kᵀ (sdpa exports split the scale as √s on each side)."""
    scale = 1.0
    while (node := value.producer()) is not None and node.op_type in ("Mul", "Div") and single_use(value):
        inner, factor = scalar_operand(node)
        if inner is None:
            break
        nodes.append(node)
        value, scale = inner, scale * factor
    return value, scale


def skip_guards(probs: ir.Value, nodes: list[ir.Node]) -> ir.Value:
    """Step over what sits between Softmax and the MatMul with v without changing finite values:
    Cast/Dropout/Identity and the dynamo exporter's NaN guard Where(IsNaN(p), 0, p)."""
    while True:
        users = probs.consumers()
        if len(users) == 1 and users[0].op_type in ("Cast", "Dropout", "Identity"):
            nodes.append(users[0])
            probs = users[0].outputs[0]
            continue
        kinds = {u.op_type: u for u in users}
        isnan, where = kinds.get("IsNaN"), kinds.get("Where")
        if (len(users) == 2 and isnan and where and where.inputs[0] is isnan.outputs[0]
                and where.inputs[2] is probs and is_no_mask(where.inputs[1])):
            nodes += [isnan, where]
            probs = where.outputs[0]
            continue
        return probs
