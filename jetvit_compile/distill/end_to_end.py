"""Stage 2, end-to-end distillation: train all of a layout's new parameters jointly, so that the rewritten
model (the student) reproduces the original's (the teacher's) output, or the named taps, on calibration
photos; the original weights stay frozen.

The objective is the search's: fidelity is the mean Pearson correlation per photo (averaged over taps), so
the loss is ``1 - Pearson`` per photo and tensor, the same number, differentiable; it ignores the scale and
offset of the output, as fidelity does. Per block transfer (stage 1) gets each block close alone; errors
then compound through the blocks after it, and only training against the model's output repairs that.

* Teacher outputs are computed once per photo (no grad) and kept on the CPU.
* Adam at a constant rate (so a finished run can be extended by asking for more steps); the photos of step
  ``t`` are a function of the seed and ``t`` only (a seeded shuffle per epoch, ``batch`` photos a step).
* Seeded and deterministic: the same seed gives bit-identical parameters on CPU.
* Resumable: ``checkpoint`` (one atomic safetensors file, :mod:`.end_to_end_checkpoint`) is written every
  ``checkpoint_every`` steps; a run given an existing checkpoint of the same run continues from it, and
  ends where an uninterrupted run ends.
* Data-parallel (:mod:`.data_parallel`): under ``torchrun`` each process back-propagates its share of
  every batch, gradients are summed, and rank 0 writes the checkpoint and draws the progress bar.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..errors import UsageError
from ..images import load_image
from ..layout import Layout
from ..measure.fidelity import Fidelity, compare
from ..progress import progress_bar
from ..sites import architecture_fingerprint
from . import end_to_end_checkpoint as ckpt
from .data_parallel import World, device_for, world_for
from .students import Student

Photo = str | os.PathLike | torch.Tensor  # a path, or an image already preprocessed, [3, H, W] or [1, 3, H, W]


@dataclasses.dataclass(frozen=True)
class EndToEndSettings:
    steps: int = 200  # Adam steps
    lr: float = 1e-3
    batch: int = 2  # photos per step, over all processes together
    seed: int = 0
    checkpoint_every: int = 25  # steps between checkpoints (and one at the end)
    device: str = "cpu"  # or "cuda" (under torchrun: each process on its LOCAL_RANK's GPU)


@dataclasses.dataclass
class DistillResult:
    params: dict[str, torch.Tensor]  # "site{i}.<param>", CPU, for Layout(params=...)
    loss_before: float  # mean 1 - Pearson on the training photos, before and after training
    loss_after: float
    curve: list[float]  # the training loss of every step (its batch's mean)
    fidelity_before: Fidelity | None  # on the held-out photos, when given
    fidelity_after: Fidelity | None
    steps: int
    resumed_from: int | None = None  # the checkpoint's step, when the run continued one

    def layout(self, layout: Layout) -> Layout:
        """``layout`` carrying the trained parameters (over any it had)."""
        return dataclasses.replace(layout, params={**layout.params, **self.params})


def pearson_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """``1 - Pearson correlation``, averaged over the tensors of one photo (its output, or its taps)."""
    losses = []
    for s, t in zip(student, teacher, strict=True):
        s, t = s.float().reshape(-1), t.float().reshape(-1)
        s, t = s - s.mean(), t - t.mean()
        losses.append(1 - (s @ t) / (s.norm() * t.norm()).clamp_min(1e-12))
    return torch.stack(losses).mean()


def distill_end_to_end(
    student: Student,
    photos: Sequence[Photo],
    settings: EndToEndSettings = EndToEndSettings(),
    held_out: Sequence[Photo] = (),
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> DistillResult:
    """Train ``student``'s learnable blocks (in place) on ``photos``; ``held_out`` photos are only measured.
    ``on_step(step, loss)`` is called after every step (1-based). Returns the parameters and the losses."""
    _check(settings, photos, held_out)
    device = device_for(settings.device)
    world = world_for(device)
    if settings.batch < world.size:
        raise UsageError(f"a batch of {settings.batch} photos cannot be shared by {world.size} processes; "
                         f"give batch >= {world.size}")
    student.to(device)
    named = student.named_parameters()
    params = [p for _, p in named]
    train = _Photos(photos, student, device)
    test = _Photos(held_out, student, device) if held_out else None
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    run = _run_key(student, train, test, settings)
    path = Path(checkpoint) if checkpoint is not None else None
    state = ckpt.load(path, run) if path is not None else None
    if state is not None:
        if state.step > settings.steps:
            raise UsageError(f"checkpoint {path} is at step {state.step}, past the {settings.steps} steps asked; "
                             f"ask for {state.step} steps or more, or delete it")
        student.load_params(state.params)
        optimizer.load_state_dict({"state": state.optimizer["state"],
                                   "param_groups": optimizer.state_dict()["param_groups"]})
        start, curve, before = state.step, list(state.curve), state.before
    else:
        world.broadcast_(params)
        start, curve = 0, []
        before = {"loss": _mean_loss(student, train, world)}
        if test is not None:
            before.update(dataclasses.asdict(_fidelity(student, test, world)))

    bar = progress_bar(settings.steps - start, progress and world.is_main, "distilling")
    try:
        for step in range(start, settings.steps):
            optimizer.zero_grad(set_to_none=False)
            batch = _batch(step, len(train), settings.batch, settings.seed)
            total = torch.zeros((), dtype=torch.float64)
            for index in batch[world.rank::world.size]:
                loss = pearson_loss(student.module(train.image(index)), train.teacher(index))
                (loss / len(batch)).backward()  # the global batch's mean, summed over processes below
                total += loss.detach().double().cpu()
            world.sum_gradients_(params)
            optimizer.step()
            curve.append(float(world.all_reduce_sum_(total.to(device)).item()) / len(batch))
            bar.step(f"loss {curve[-1]:.4f}")
            done = step + 1
            if path is not None and world.is_main and (done % settings.checkpoint_every == 0 or done == settings.steps):
                ckpt.save(path, run, ckpt.TrainingState(done, student.params(), optimizer.state_dict(), curve, before))
            if on_step is not None:
                on_step(done, curve[-1])
    finally:
        bar.close()
    after = _fidelity(student, test, world) if test is not None else None
    return DistillResult(
        params=student.params(), loss_before=before["loss"], loss_after=_mean_loss(student, train, world),
        curve=curve, fidelity_before=Fidelity(**{k: before[k] for k in ("pearson", "pearson_min", "mae", "images")})
        if test is not None else None, fidelity_after=after, steps=settings.steps,
        resumed_from=state.step if state is not None else None)


def _check(settings: EndToEndSettings, photos: Sequence[Photo], held_out: Sequence[Photo]) -> None:
    if settings.steps < 0 or settings.batch < 1 or settings.checkpoint_every < 1 or not settings.lr > 0:
        raise UsageError(f"steps must be >= 0, batch and checkpoint_every >= 1 and lr > 0 (got {settings})")
    if len(photos) < settings.batch:
        raise UsageError(f"end-to-end distillation needs at least batch={settings.batch} training photos, got "
                         f"{len(photos)}: give more calibration photos or a smaller batch")
    missing = [str(p) for p in [*photos, *held_out] if not isinstance(p, torch.Tensor) and not Path(p).is_file()]
    if missing:
        raise UsageError(f"photos not found: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    named = {Path(p).resolve() for p in photos if not isinstance(p, torch.Tensor)}
    if overlap := [str(p) for p in held_out if not isinstance(p, torch.Tensor) and Path(p).resolve() in named]:
        raise UsageError(f"held-out photos are also training photos ({', '.join(overlap[:3])}); a held-out "
                         "check needs photos the training never saw")


class _Photos:
    """Photos at the student's input size, with the teacher's outputs computed once per photo."""

    def __init__(self, items: Sequence[Photo], student: Student, device: torch.device):
        self.items, self.student, self.device = list(items), student, device
        self._teacher: dict[int, list[torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def identity(self) -> list[str]:
        return [str(Path(p).resolve()) if not isinstance(p, torch.Tensor)
                else f"tensor:{zlib.crc32(p.detach().cpu().contiguous().numpy().tobytes()):08x}" for p in self.items]

    def image(self, index: int) -> torch.Tensor:
        item, size = self.items[index], self.student.input_size
        x = item if isinstance(item, torch.Tensor) else load_image(item, size)
        x = x[None] if x.dim() == 3 else x
        if tuple(x.shape) != (1, 3, *size):
            raise UsageError(f"photo {index} is a tensor of shape {tuple(x.shape)}; the student takes "
                             f"[1, 3, {size[0]}, {size[1]}] (or give its path)")
        return x.to(self.device)

    def teacher(self, index: int) -> list[torch.Tensor]:
        if index not in self._teacher:
            with torch.no_grad():
                self._teacher[index] = [t.detach().cpu() for t in self.student.teacher(self.image(index))]
        return [t.to(self.device) for t in self._teacher[index]]


def _mean_loss(student: Student, photos: _Photos, world: World) -> float:
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for index in range(world.rank, len(photos), world.size):
            total += pearson_loss(student.module(photos.image(index)), photos.teacher(index)).double().cpu()
    return float(world.all_reduce_sum_(total.to(photos.device)).item()) / len(photos)


def _fidelity(student: Student, photos: _Photos, world: World) -> Fidelity:
    per_photo = torch.zeros(len(photos), 2, dtype=torch.float64)  # Pearson, mean absolute error
    with torch.no_grad():
        for index in range(world.rank, len(photos), world.size):
            out = [t.cpu() for t in student.module(photos.image(index))]
            one = compare([[t.cpu() for t in photos.teacher(index)]], [out])
            per_photo[index] = torch.tensor([one.pearson, one.mae], dtype=torch.float64)
    per_photo = world.all_reduce_sum_(per_photo.to(photos.device)).cpu()
    return Fidelity(float(per_photo[:, 0].mean()), float(per_photo[:, 0].min()), float(per_photo[:, 1].mean()),
                    len(photos))


def _batch(step: int, photos: int, batch: int, seed: int) -> list[int]:
    """The photos of step ``step``: epoch ``e`` is a seeded shuffle cut into whole batches (a remainder waits
    for a later epoch, so no batch holds a photo twice)."""
    per_epoch = photos // batch
    epoch, position = divmod(step, per_epoch)
    return _shuffle(epoch, photos, seed)[position * batch:(position + 1) * batch]


@functools.lru_cache(maxsize=4)
def _shuffle(epoch: int, photos: int, seed: int) -> list[int]:
    # crc32, not hash(): Python salts str hashes per process, and every process must draw the same order
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{epoch}".encode()))
    return torch.randperm(photos, generator=generator).tolist()


def _run_key(student: Student, train: _Photos, test: _Photos | None, settings: EndToEndSettings) -> dict:
    """What a checkpoint must agree on to be continued: everything but the step count and the device."""
    start = zlib.crc32(b"".join(v.numpy().tobytes() for v in student.params().values()))
    return {"model": architecture_fingerprint(student.sites), "input_size": list(student.input_size),
            "layout": str(student.layout), "taps": list(student.taps), "start": f"{start:08x}",
            "photos": train.identity(), "held_out": test.identity() if test else [], "lr": settings.lr,
            "batch": settings.batch, "seed": settings.seed}
