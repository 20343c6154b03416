"""ONNX files end to end: load (with shapes set), inspect, rewrite + verify + save, benchmark on ORT."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx_ir as ir

from .errors import UnsupportedModelError, UsageError
from .measure.rows import LayoutResult, side_by_side
from .images import images_in, load_image, photo_paths
from .layout import Layout
from ._files import check_output_path
from .onnx_files import load_model, save_model
from .passes.onnx import find_attention, set_input_shapes
from .passes.onnx.rewrite import rewrite_onnx
from .passes.onnx.verify import verify
from .sites import AttentionSite, Grid
from .measure.timing import interleaved



def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UsageError("onnxruntime is not installed: pip install 'jetvit-compile[cpu]' (or [gpu])") from None
    return onnxruntime


def prepare(model: str | os.PathLike | ir.Model, input_shapes: str | dict | None = None) -> ir.Model:
    """An ``ir.Model`` read from ``model`` with ``input_shapes`` (``NAME:1x3xHxW``) applied."""
    m = model if isinstance(model, ir.Model) else load_model(model)
    if input_shapes:
        set_input_shapes(m, input_shapes)
    return m


def inspect_onnx(model, input_shapes=None, grid: Grid | None = None) -> tuple[list[AttentionSite], list[str]]:
    return find_attention(prepare(model, input_shapes), grid)


def _concrete_shape(value: ir.Value) -> tuple[int, ...]:
    """The input's shape, a symbolic batch (first) dim read as 1; other symbolic dims are refused."""
    dims = tuple(value.shape or ())
    if dims and not isinstance(dims[0], int):
        dims = (1, *dims[1:])
    if not dims or not all(isinstance(d, int) for d in dims):
        raise UsageError(f"input {value.name!r} has shape {value.shape}; give a concrete one with "
                         f"--input-shape {value.name}:1x3xHxW")
    return dims


def _photo(path, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A preprocessed photo as an ``[B, 3, H, W]`` array of ``shape`` and ``dtype`` (the batch repeats it)."""
    return np.broadcast_to(load_image(path, shape[2:]).numpy(), shape).astype(dtype)


def input_feed(model: ir.Model, seed: int = 0) -> dict[str, np.ndarray]:
    """One input per graph input: a real photo for ``[1, 3, H, W]`` float images, else seeded noise."""
    feed = {}
    rng = np.random.default_rng(seed)
    for value in model.graph.inputs:
        if value.name in model.graph.initializers:
            continue
        shape = _concrete_shape(value)
        if len(shape) == 4 and shape[1] == 3:
            feed[value.name] = _photo(photo_paths(limit=1)[0], shape, value.dtype.numpy())
        else:
            feed[value.name] = rng.standard_normal(shape).astype(value.dtype.numpy())
    return feed


def rewrite_onnx_file(
    src: str | os.PathLike,
    layout: Layout | str,
    out: str | os.PathLike,
    input_shapes: str | dict | None = None,
    grid: Grid | None = None,
    check: bool = True,
    ort_kernels: bool = False,
) -> tuple[dict[str, int], list[float]]:
    """Rewrite the ONNX file ``src`` into ``out`` (checked against the reference maths first unless
    ``check`` is False; with ``ort_kernels``, as the onnxruntime target lowers it). Returns ``{pass: count}``
    and the per-site max abs errors."""
    out = check_output_path(out, src)
    layout = Layout.coerce(layout)
    model, summary, spliced = rewrite_onnx(prepare(src, input_shapes), layout, grid, ort_kernels)
    errors = verify(model, spliced, input_feed(model), layout.site_params) if check and spliced else []
    save_model(model, out)
    return summary, errors


def bench_onnx(
    paths: list[str | os.PathLike],
    input_shapes: str | dict | None = None,
    images: str | os.PathLike | None = None,
    max_images: int = 4,
    repeat: int = 10,
) -> list[LayoutResult]:
    """Latency (ONNX Runtime, CPU provider) of each model, ratio to the first, output fidelity to the first."""
    import torch

    ort = _onnxruntime()
    sessions = []
    for p in paths:
        model = prepare(p, input_shapes)
        blob = ir.serde.serialize_model(model).SerializeToString()
        sessions.append((Path(p).name, ort.InferenceSession(blob, providers=["CPUExecutionProvider"]), model))
    first = sessions[0][2]
    image_input = [v for v in first.graph.inputs if v.name not in first.graph.initializers]
    if len(image_input) != 1:
        raise UnsupportedModelError("bench feeds one image input; these models have "
                                    f"{[v.name for v in image_input]}")
    value = image_input[0]
    shape = _concrete_shape(value)
    if len(shape) != 4 or shape[1] != 3:
        raise UnsupportedModelError(f"bench feeds images [B, 3, H, W]; input {value.name!r} has shape {shape}")
    for label, session, _ in sessions[1:]:
        if [i.name for i in session.get_inputs()] != [value.name]:
            raise UsageError(f"{label} does not take the single input {value.name!r} of {sessions[0][0]}: "
                             "bench compares models with the same interface (an original and its rewrites)")
    photos = (images_in(images) if images else photo_paths())[:max_images]
    dtype = value.dtype.numpy()
    feeds = [{value.name: _photo(p, shape, dtype)} for p in photos]
    # outputs first: a mismatch is reported before any time is spent on timing
    outputs = [[torch.from_numpy(s.run(None, f)[0]) for f in feeds] for _, s, _ in sessions]
    for (label, _, _), outs in zip(sessions[1:], outputs[1:]):
        if outs[0].shape != outputs[0][0].shape:
            raise UsageError(f"{label} returns {tuple(outs[0].shape)}, {sessions[0][0]} {tuple(outputs[0][0].shape)}: "
                             "bench compares models with the same output (e.g. an original and its rewrites)")
    latencies = interleaved([lambda s=s: s.run(None, feeds[0]) for _, s, _ in sessions], repeat=repeat)
    return side_by_side([(label, {}) for label, _, _ in sessions], latencies, outputs)
