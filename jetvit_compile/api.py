"""The public Python API: a face over the stages; nothing inside the package imports it.

Every function takes a model as :func:`jetvit_compile.frontend.open_model` does: a ``torch.export``
ExportedProgram, a ``.pt2`` / ``.onnx`` path (``input_shapes`` for ONNX), or an already opened ViTModel.
"""
from __future__ import annotations

import dataclasses
import os

import torch

from .compiler.artifact import CompileResult
from .distill.distill_layout import DistillOutcome, DistillSettings, distill_layout
from .frontend import ViTModel, open_model
from .layout import Layout
from .profiles import DEFAULT_VARIANTS, profile_model
from .search.outcome import SearchOutcome
from .search.run import search as _search
from .search.settings import SearchSettings
from .sites import AttentionSite, Grid


def inspect(model, *, grid: Grid | None = None, input_shapes: str | None = None) -> list[AttentionSite]:
    """Every attention site of ``model``, in graph order.

    ``grid`` (patch rows, columns) is needed only when the graph has no patch-embedding convolution.
    """
    return open_model(model, input_shapes, grid).require_sites()


def rewrite(model, layout: Layout | str, *, grid: Grid | None = None):
    """Rewrite each site as ``layout`` says; return the new ExportedProgram (or ``onnx_ir.Model``) and
    ``{pass: sites changed}``.

    ``layout``: a :class:`Layout`, an inline form (``"window:14"``, ``"window:14;full@5,11"``,
    ``"full,linear:jetvit,..."``) or a path to a layout JSON file.
    """
    rewritten = open_model(model, grid=grid).rewrite(layout)
    return rewritten.graph, rewritten.summary


def compile(  # noqa: A001 - the verb users expect, as in torch.compile / torch_tensorrt.compile
    model,
    layout: Layout | str = "full",
    target: str = "auto",
    inputs: tuple[torch.Tensor, ...] | None = None,
    settings=None,
    output: str | os.PathLike | None = None,
    *,
    input_shapes: str | None = None,
    quantize: str | None = None,
) -> CompileResult:
    """Rewrite ``model`` by ``layout``, lower it on ``target`` (``"auto"``: the first that works here),
    check it against the rewritten graph, and save it into the folder ``output`` when given."""
    return open_model(model, input_shapes).compile(layout, target, settings=settings, output=output,
                                                   quantize=quantize, inputs=inputs)


def profile(model, *, target: str = "onnxruntime", variants=None, profile=None, grid: Grid | None = None,
            input_shapes: str | None = None, repeat: int = 10, progress: bool = True):
    """Per-device latency of each attention variant at each distinct site shape of ``model`` (or of a list of
    sites); entries already in ``profile`` are reused."""
    if not (isinstance(model, (list, tuple)) and all(isinstance(s, AttentionSite) for s in model)):
        model = open_model(model, input_shapes, grid)
    return profile_model(model, variants or DEFAULT_VARIANTS, target, profile, repeat=repeat, progress=progress)


def search(model, calib: str | os.PathLike, settings: SearchSettings | None = None, *,
           input_shapes: str | None = None, output: str | os.PathLike | None = None,
           report: str | os.PathLike | None = None, **overrides) -> SearchOutcome:
    """Post-Training Attention Search: a per-site layout for ``model`` scored on the photos in ``calib``;
    ``settings`` (:class:`SearchSettings`) or its fields as keywords (``min_fidelity``, ``budget_ms``,
    ``variants``, ``taps``, ``quantize``, ...)."""
    return _search(model, calib, settings, input_shapes=input_shapes, output=output, report=report, **overrides)


def distill(model, layout: Layout | str, calib: str | os.PathLike, settings: DistillSettings | None = None, *,
            input_shapes: str | None = None, output: str | os.PathLike | None = None, **overrides) -> DistillOutcome:
    """Stage 2: train ``layout``'s new parameters (learned blocks: ``linear:jetvit``, ``linear:hedgehog``,
    ``+learned`` windows) so that the rewritten model reproduces ``model``'s output (or ``taps``) on the photos
    in ``calib``; judged on photos set aside; the layout with its parameters written to ``output``.
    ``settings`` (:class:`DistillSettings`) or its fields as keywords (``steps``, ``lr``, ``taps``, ``device``,
    ``train_shapes``, ...)."""
    settings = dataclasses.replace(settings or DistillSettings(), **overrides)
    return distill_layout(open_model(model, input_shapes), layout, calib, settings, output)


__all__ = ["inspect", "rewrite", "compile", "profile", "search", "distill", "ViTModel", "open_model",
           "SearchSettings", "DistillSettings"]
