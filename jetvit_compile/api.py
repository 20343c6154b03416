"""The public Python API: orchestration of the steps, no graph code here."""
from __future__ import annotations

import os

import torch

from .errors import UsageError
from .layout import Layout
from .sites import AttentionSite, Grid



def _as_program(model) -> torch.export.ExportedProgram:
    if isinstance(model, torch.export.ExportedProgram):
        return model
    if isinstance(model, torch.nn.Module):
        raise UsageError(
            "got an nn.Module; export it first: ep = torch.export.export(model, (example_input,)), "
            "then pass ep (the rewrite reads the exported graph, not Python code)"
        )
    if isinstance(model, (str, os.PathLike)):
        raise UsageError(f"{model}: ONNX files are handled by the jetvit-compile command line (ONNX path)")
    raise UsageError(f"expected a torch.export.ExportedProgram, got {type(model).__name__}")


def inspect(model: torch.export.ExportedProgram, *, grid: Grid | None = None) -> list[AttentionSite]:
    """Every attention site of an exported model, in graph order.

    ``grid`` (patch rows, columns) is needed only when the graph has no patch-embedding convolution.
    """
    from .passes.fx.program import sites_of

    return sites_of(_as_program(model).module(), grid)


def rewrite(
    model: torch.export.ExportedProgram, layout: Layout | str, *, grid: Grid | None = None
) -> tuple[torch.export.ExportedProgram, dict[str, int]]:
    """Rewrite each site as ``layout`` says; return the new ExportedProgram and ``{pass: sites changed}``.

    ``layout``: a :class:`Layout`, an inline form (``"window:14"``, ``"window:14;full@5,11"``,
    ``"full,linear:jetvit,..."``) or a path to a layout JSON file.
    """
    from .passes.fx.program import rewrite_program

    return rewrite_program(_as_program(model), layout, grid)


def profile(model, *, target: str = "onnxruntime", variants=None, profile=None, grid: Grid | None = None,
            repeat: int = 10, progress: bool = True):
    """Per-device latency of each attention variant at each distinct site shape of ``model``
    (an ExportedProgram, an ONNX / .pt2 path, or a list of sites); entries already in ``profile`` are reused."""
    from .profiles import DEFAULT_VARIANTS, profile_model

    return profile_model(model, variants or DEFAULT_VARIANTS, target, profile, repeat=repeat, progress=progress,
                         grid=grid)


def search(model, calib: str | os.PathLike, **options):
    """Post-Training Attention Search: a per-site layout for ``model`` (ExportedProgram, .pt2 or .onnx path)
    scored on the photos in ``calib``; see :func:`jetvit_compile.search.run.search` for the options
    (``min_fidelity``, ``budget_ms``, ``variants``, ``output``, ``report``, ...)."""
    from .search.run import search as run_search

    return run_search(model, calib, **options)
