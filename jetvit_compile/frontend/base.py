"""The one interface every stage takes: an exported ViT, whatever it was read from.

A ``ViTModel`` knows its attention sites (found once, when it is opened), rewrites itself by a layout, runs
(original or rewritten) on photos, saves a rewrite, and compiles. Only :mod:`.open` asks what kind of file
or object a model is; the search, the profiles, the compile and the command line hold a ``ViTModel``.
"""
from __future__ import annotations

import abc
import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence

import torch

from .._files import check_output_path
from ..errors import UnsupportedModelError, UsageError
from ..layout import Layout
from ..sites import AttentionSite, architecture_fingerprint


@dataclasses.dataclass
class Rewritten:
    graph: Any  # a torch.export.ExportedProgram or an onnx_ir.Model
    summary: dict[str, int]  # {pass: sites changed}
    site_errors: list[float] = dataclasses.field(default_factory=list)  # per rewritten site, vs the reference maths


class Evaluator(Protocol):
    """What the search scores with: the model judged on its first output or on ``taps``."""

    taps: list[str]

    def outputs(self, layout: Layout | None, images: list[torch.Tensor]) -> list:
        """Per image (``[1, 3, H, W]``), the first output, or the list of the taps' values; None: the original."""

    def model(self, layout: Layout | None) -> Callable[[torch.Tensor], object]:
        """The original (None) or its rewrite, ready to run on one image (what latency is measured on)."""

    def scorer(self, images: list[torch.Tensor], max_bytes: int) -> Callable[[Layout], list]:
        """``outputs(layout, images)`` for the many layouts a search scores on the same ``images``, reusing
        what it may between them within ``max_bytes``."""


@dataclasses.dataclass
class ReuseStats:
    """What a search's scorer saved by reusing activations between layouts."""
    evaluations: int = 0
    reused: int = 0  # layouts run from a later site than the first
    sites_skipped: int = 0  # attention sites (with their blocks) not run again, over all layouts
    sites_total: int = 0

    def describe(self) -> str:
        return (f"{self.reused} of {self.evaluations} layouts scored from a later site, "
                f"{self.sites_skipped} of {self.sites_total} blocks not run again")


class WholeRuns:
    """The scorer that reuses nothing: every layout run whole on ``images``."""

    def __init__(self, evaluator: Evaluator, images: list[torch.Tensor]):
        self.evaluator, self.images, self.stats = evaluator, images, ReuseStats()

    def __call__(self, layout: Layout) -> list:
        self.stats.evaluations += 1
        return self.evaluator.outputs(layout, self.images)


class ViTModel(abc.ABC):
    kind: ClassVar[str]  # "torch.export program" / "ONNX model": for messages
    default_backend: ClassVar[str]  # what its search profiles and times: torch / onnxruntime

    def __init__(self, sites: list[AttentionSite], refused: list[str], path: str | os.PathLike | None):
        self.sites, self.refused = sites, refused
        self.path = Path(path) if path is not None else None  # the file it was read from: never an output

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else f"the {self.kind}"

    @property
    def fingerprint(self) -> str:
        return architecture_fingerprint(self.require_sites())

    def require_sites(self) -> list[AttentionSite]:
        if not self.sites:
            why = ("; refused: " + "; ".join(self.refused)) if self.refused else ""
            raise UnsupportedModelError(f"{self.label}: no attention found in the graph{why}")
        return self.sites

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """The image input's concrete shape (a symbolic batch read as 1)."""

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the model's image input ``[1, 3, H, W]``; refused for other inputs."""
        shape = self.input_shape
        if len(shape) != 4 or shape[1] != 3:
            raise UnsupportedModelError(f"{self.label}: photos are fed as [1, 3, H, W]; the model's input is {shape}"
                                        " (give a concrete size with --input-shape NAME:1x3xHxW)")
        return int(shape[2]), int(shape[3])

    @property
    @abc.abstractmethod
    def input_names(self) -> list[str]:
        """The names of the model's inputs (the graph's, not its weights)."""

    @abc.abstractmethod
    def file_runner(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The model as read (no rewrite, no lowering) on its own runtime: image -> its first output."""

    @abc.abstractmethod
    def rewrite(self, layout: Layout | str, check: bool = True) -> Rewritten:
        """The portable rewrite by ``layout`` (checked against the reference maths unless ``check`` is False)."""

    suffix: ClassVar[str]  # what a rewrite of it is saved as

    def output_path(self, out: str | os.PathLike) -> Path:
        """``out``, after refusing one that would overwrite this model's file, cannot be written, or would not
        say what it holds (a rewrite is saved as the same kind of file)."""
        out = check_output_path(out, *([self.path] if self.path is not None else []))
        if out.suffix.lower() != self.suffix:
            raise UsageError(f"{self.label} is a {self.kind}; write its rewrite as a {self.suffix} file, not {out}")
        return out

    @abc.abstractmethod
    def save(self, rewritten: Rewritten, out: str | os.PathLike) -> Path:
        """Write ``rewritten`` to ``out`` atomically (never over this model's own file)."""

    @abc.abstractmethod
    def evaluator(self, taps: Sequence[str] = (), quantize: str | None = None) -> Evaluator:
        """Runs of this model rewritten by any layout, as its deploy target lowers them."""

    @abc.abstractmethod
    def compile(self, layout: Layout | str = "full", target: str = "auto", *, settings=None,
                output: str | os.PathLike | None = None, quantize: str | None = None, inputs=None):
        """Rewrite, lower on ``target`` (auto: the best available), check and save: a CompileResult."""

    @abc.abstractmethod
    def capture(self, images: list[torch.Tensor], folder: str | os.PathLike, sites: Sequence[int] | None = None):
        """Each site's q, k, v and attention output on ``images``, streamed to ``folder`` (a CaptureStore,
        :mod:`..distill.captures`): what block-wise attention transfer trains on."""

    @abc.abstractmethod
    def student(self, layout: Layout | str, taps: Sequence[str] = (), input_shapes: str | None = None, seed: int = 0):
        """The model rewritten by ``layout`` as a differentiable torch module whose only trainable parameters
        are the new blocks' (:mod:`..distill.students`), beside its teacher; ``input_shapes``: another size to
        train at (ONNX files)."""

    @abc.abstractmethod
    def timed_runner(self, layout: Layout | None, backend: str, image: torch.Tensor,
                     quantize: str | None = None) -> Callable[[], object]:
        """The model (original: None) run on ``image`` by ``backend``: what a latency is measured on."""
