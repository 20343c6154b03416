"""``distill``: stage 2 on a given layout, end to end, from a folder of photos to a layout file that carries
the trained parameters, with the result judged on photos the training never saw, in the model's own runtime
at its own input size (the deployed model, not the torch student).

The photos are split as the search splits them (:mod:`..calibration`); training can run at a smaller input
(``train_shapes``, ONNX files: the new blocks' parameters do not depend on the size) and is resumable: an
interrupted run leaves a checkpoint beside the output, and the same command continues it.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .. import calibration
from .._files import check_output_path
from ..errors import UsageError
from ..images import images_in
from ..layout import Layout
from ..measure.fidelity import Fidelity, compare
from .end_to_end import DistillResult, EndToEndSettings, distill_end_to_end


@dataclasses.dataclass(frozen=True)
class DistillSettings:
    steps: int = 200  # Adam steps on the layout's new parameters
    lr: float = 1e-3
    batch: int = 2  # photos per step
    seed: int = 0
    device: str = "cpu"  # or "cuda"
    taps: tuple[str, ...] = ()  # what fidelity is judged on (None: the first output), as for the search
    held_out: float = 0.25  # share of the photos set aside to judge the result
    max_photos: int | None = 32  # training photos at most
    max_held_out: int | None = 8
    train_shapes: str | None = None  # NAME:1x3xHxW to train at (ONNX files); None: the model's own size
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "taps", tuple(self.taps or ()))
        if self.steps < 1 or self.batch < 1 or not self.lr > 0:
            raise UsageError(f"distillation needs steps >= 1, batch >= 1 and lr > 0 (got steps={self.steps}, "
                             f"batch={self.batch}, lr={self.lr})")


@dataclasses.dataclass
class DistillOutcome:
    layout: Layout  # with the trained parameters
    training: DistillResult  # losses, the loss curve, the torch student's held-out fidelity
    held_out_before: Fidelity  # the layout untrained, in the model's runtime, on the held-out photos
    held_out_after: Fidelity  # trained
    photos: list[str]
    held_out_photos: list[str]
    layout_path: Path | None = None


def checkpoint_path(output: Path) -> Path:
    return output.with_name(f".{output.stem}.distill-checkpoint.safetensors")


def _check_output(output: str | os.PathLike, model, layout: str | os.PathLike | Layout) -> Path:
    inputs = [p for p in (model.path,) if p is not None]
    if isinstance(layout, (str, os.PathLike)) and Path(layout).suffix == ".json" and Path(layout).is_file():
        inputs += [Path(layout), Path(layout).with_suffix(".safetensors")]
    out = check_output_path(output, *inputs)
    if out.suffix != ".json":
        raise UsageError(f"the distilled layout is written as JSON (its parameters beside it): name the output "
                         f"*.json, not {out.name}")
    for src in inputs:
        if out.with_suffix(".safetensors").resolve() == Path(src).resolve():
            raise UsageError(f"writing {out} would overwrite {src} (its parameters file); choose another name")
    return out


def distill_layout(model, layout: Layout | str, calib: str | os.PathLike, settings: DistillSettings | None = None,
                   output: str | os.PathLike | None = None) -> DistillOutcome:
    """Train ``layout``'s new parameters on ``model`` (an opened ViTModel) against its own output (or taps)."""
    settings = settings or DistillSettings()
    out = _check_output(output, model, layout) if output is not None else None
    layout = Layout.coerce(layout)
    paths = images_in(calib)
    train, held = calibration.split(paths, settings.held_out, settings.seed, settings.max_photos,
                                    settings.max_held_out)
    student = model.student(layout, settings.taps, settings.train_shapes, settings.seed)  # refuses no learnable site
    initial = {k: v.clone() for k, v in student.params().items()}  # what training starts from
    e2e = EndToEndSettings(steps=settings.steps, lr=settings.lr, batch=settings.batch, seed=settings.seed,
                           device=settings.device)
    checkpoint = checkpoint_path(out) if out is not None else None
    training = distill_end_to_end(student, train, e2e, held_out=held, checkpoint=checkpoint,
                                  progress=settings.progress)
    trained = dataclasses.replace(training.layout(layout), fingerprint=model.fingerprint)
    # judged as deployed: the model's own runtime and input size, on photos the training never saw
    evaluator = model.evaluator(settings.taps)
    images = calibration.load(held, model.input_size)
    reference = evaluator.outputs(None, images)
    start = dataclasses.replace(layout, params={**layout.params, **initial})
    before = compare(reference, evaluator.outputs(start, images))
    after = compare(reference, evaluator.outputs(trained, images))
    outcome = DistillOutcome(trained, training, before, after, [p.name for p in train], [p.name for p in held])
    if out is not None:
        outcome.layout_path = trained.save(out, num_sites=len(model.require_sites()))
        if checkpoint is not None and checkpoint.exists():
            checkpoint.unlink()  # the run is done: its layout file holds what the checkpoint did
    return outcome
