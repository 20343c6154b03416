"""Models side by side on the same photos: latency (interleaved runs, median), speedup over the first row,
and output fidelity to the first row."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import UnsupportedModelError, UsageError
from .frontend import ViTModel, open_model
from .images import images_in, load_image, photo_paths
from .layout import Layout
from .measure.rows import LayoutResult, side_by_side
from .measure.timing import interleaved


def evaluate_layouts(model, layouts: list[Layout | str], inputs: list[torch.Tensor], repeat: int = 5,
                     output=lambda out: out) -> list[LayoutResult]:
    """The original ``model`` (any front-end source) and each rewrite, on its own runtime: timed on ``inputs[0]``,
    outputs (``output(model(x))``) compared with the original's on every input."""
    model = open_model(model)
    evaluator = model.evaluator()
    layouts = [Layout.coerce(x) for x in layouts]
    runs = [evaluator.model(None)] + [evaluator.model(x) for x in layouts]
    labels = [("original", {})] + [(str(x), model.rewrite(x, check=False).summary) for x in layouts]
    with torch.no_grad():
        latencies = interleaved([lambda r=r: r(inputs[0]) for r in runs], repeat=repeat)
        outputs = [[output(r(x)) for x in inputs] for r in runs]
    return side_by_side(labels, latencies, outputs)


def bench_files(paths: list[str | os.PathLike], input_shapes: str | dict | None = None,
                images: str | os.PathLike | None = None, max_images: int = 4, repeat: int = 10) -> list[LayoutResult]:
    """Latency of each ONNX file on ONNX Runtime (CPU provider) as it is, ratio to the first, output fidelity
    to the first: e.g. an original and the files ``rewrite`` / ``compile`` wrote from it."""
    models: list[ViTModel] = [open_model(p, input_shapes) for p in paths]
    names = models[0].input_names
    if len(names) != 1:
        raise UnsupportedModelError(f"bench feeds one image input; these models have {names}")
    shape = models[0].input_shape
    if len(shape) != 4 or shape[1] != 3:
        raise UnsupportedModelError(f"bench feeds images [B, 3, H, W]; input {names[0]!r} has shape {shape}")
    for path, m in zip(paths[1:], models[1:]):
        if m.input_names != names:
            raise UsageError(f"{Path(path).name} does not take the single input {names[0]!r} of "
                             f"{Path(paths[0]).name}: bench compares models with the same interface (an original "
                             "and its rewrites)")
    runs = [m.file_runner() for m in models]
    photos = (images_in(images) if images else photo_paths())[:max_images]
    batch = [load_image(p, shape[2:]).expand(shape).contiguous() for p in photos]
    # outputs first: a mismatch is reported before any time is spent on timing
    outputs = [[r(x) for x in batch] for r in runs]
    for path, outs in zip(paths[1:], outputs[1:]):
        if outs[0].shape != outputs[0][0].shape:
            raise UsageError(f"{Path(path).name} returns {tuple(outs[0].shape)}, {Path(paths[0]).name} "
                             f"{tuple(outputs[0][0].shape)}: bench compares models with the same output (e.g. an "
                             "original and its rewrites)")
    latencies = interleaved([lambda r=r: r(batch[0]) for r in runs], repeat=repeat)
    return side_by_side([(Path(p).name, {}) for p in paths], latencies, outputs)
