"""Models side by side on the same photos: latency (interleaved runs, median), speedup over the anchor row
(the first unless told), and output fidelity to the first row."""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from pathlib import Path
from typing import Iterator

import torch

from .errors import UnsupportedModelError, UsageError
from .frontend import ViTModel, open_model
from .images import images_in, load_image, photo_paths
from .layout import Layout
from .measure.fidelity import compare
from .measure.rows import LayoutResult, side_by_side
from .measure.timing import Latency, interleaved


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
                images: str | os.PathLike | None = None, max_images: int = 4, repeat: int = 10,
                group_size: int | None = None, anchor: int = 0) -> list[LayoutResult]:
    """Latency of each ONNX file on ONNX Runtime (CPU provider) as it is, ratio to the first, output fidelity
    to the first: e.g. an original and the files ``rewrite`` / ``compile`` wrote from it.

    With ``group_size``, at most that many sessions are alive at once (at 1036 px each one holds gigabytes), each
    batch of them in a fresh process (one process that opened 13 sessions in turn was OOM-killed at 24 GB):
    outputs are taken one model at a time, and the models are timed in interleaved groups that each start
    with model ``anchor`` (e.g. the original compiled), so every speedup is over ``anchor`` timed in the same
    group. Without ``group_size`` all models are timed in one interleaved group, every speedup over ``anchor``
    too. Fidelity is to the first model's outputs either way."""
    if group_size is not None and group_size < 2:
        raise UsageError(f"group_size is {group_size}: a group holds the anchor and at least one other model")
    if not 0 <= anchor < len(paths):
        raise UsageError(f"anchor {anchor} is not one of the {len(paths)} models (0 to {len(paths) - 1})")
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
    photos = (images_in(images) if images else photo_paths())[:max_images]
    batch = [load_image(p, shape[2:]).expand(shape).contiguous() for p in photos]
    labels = [(Path(p).name, {}) for p in paths]
    if group_size is None:
        runs = [m.file_runner() for m in models]
        outputs = _checked_outputs(paths, (_run_all(r, batch) for r in runs))
        return side_by_side(labels, _time_all(runs, batch[0], repeat), outputs, anchor)
    # each model's outputs, then each group's timing, in a fresh process: what one frees, the next has again
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn, max_tasks_per_child=1) as pool:
        outputs = _checked_outputs(paths, (_outputs_in(pool, p, input_shapes, batch) for p in paths))
        others = [i for i in range(len(models)) if i != anchor]
        timed: dict[int, tuple[Latency, float]] = {}
        for start in range(0, len(others), group_size - 1):
            members = [anchor, *others[start:start + group_size - 1]]
            latencies = pool.submit(_file_latencies, [paths[i] for i in members], input_shapes, batch[0],
                                    repeat).result()
            timed.setdefault(anchor, (latencies[0], 1.0))
            timed.update({i: (lat, latencies[0].median_s / lat.median_s)
                          for i, lat in zip(members[1:], latencies[1:])})
    return [LayoutResult(*labels[i], timed[i][0], timed[i][1], compare(outputs[0], outputs[i]) if i else None)
            for i in range(len(models))]


def _outputs_in(pool: concurrent.futures.Executor, path, input_shapes, batch: list[torch.Tensor]) -> list[torch.Tensor]:
    """One model's outputs, taken in the pool's next (fresh) process."""
    return [torch.from_numpy(a) for a in pool.submit(_file_outputs, path, input_shapes, batch).result()]


def _file_outputs(path, input_shapes, batch: list[torch.Tensor]) -> list:
    """As numpy arrays: a tensor would come back through a file descriptor of a process that has ended."""
    return [out.numpy() for out in _run_all(open_model(path, input_shapes).file_runner(), batch)]


def _file_latencies(paths: list, input_shapes, image: torch.Tensor, repeat: int) -> list[Latency]:
    return _time_all([open_model(p, input_shapes).file_runner() for p in paths], image, repeat)


def _run_all(run, batch: list[torch.Tensor]) -> list[torch.Tensor]:
    return [run(x) for x in batch]


def _time_all(runs: list, image: torch.Tensor, repeat: int) -> list[Latency]:
    return interleaved([lambda r=r: r(image) for r in runs], repeat=repeat)


def _checked_outputs(paths: list, per_model: Iterator[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Each model's outputs (``per_model``, taken lazily, in order), checked to have the first model's shape: a
    mismatch is reported before the next model runs and before any time is spent on timing."""
    outputs = []
    for path, outs in zip(paths, per_model):
        if outputs and outs[0].shape != outputs[0][0].shape:
            raise UsageError(f"{Path(path).name} returns {tuple(outs[0].shape)}, {Path(paths[0]).name} "
                             f"{tuple(outputs[0][0].shape)}: bench compares models with the same output (e.g. an "
                             "original and its rewrites)")
        outputs.append(outs)
    return outputs
