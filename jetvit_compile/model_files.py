"""Model files the command line takes: ONNX (``.onnx``) or a saved torch.export program (``.pt2``)."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError
from .sites import AttentionSite, Grid



def is_pt2(path: str | os.PathLike) -> bool:
    return Path(path).suffix == ".pt2"


def load_pt2(path: str | os.PathLike):
    import torch

    if not Path(path).is_file():
        raise UsageError(f"{path}: no such file")
    try:  # programs of Hugging Face models need transformers' output classes registered as pytree nodes
        import transformers.modeling_outputs  # noqa: F401
    except ImportError:
        pass
    try:
        return torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad archive
        raise UsageError(f"{path}: not a readable torch.export program ({type(e).__name__})") from None


def _no_shapes_for_pt2(input_shapes: str | None) -> None:
    if input_shapes:
        raise UsageError("--input-shape applies to ONNX files; export the torch program at the size you need")


def inspect_file(path: str, input_shapes: str | None = None, grid: Grid | None = None) -> tuple[list[AttentionSite], list[str]]:
    if is_pt2(path):
        _no_shapes_for_pt2(input_shapes)
        from .passes.fx.find_attention import find_attention

        return find_attention(load_pt2(path).module(), grid)
    from .onnx_pipeline import inspect_onnx

    return inspect_onnx(path, input_shapes, grid)


def rewrite_file(path: str, layout: str, out: str, input_shapes: str | None = None, grid: Grid | None = None,
                 check: bool = True) -> tuple[dict[str, int], list[float]]:
    if is_pt2(path):
        _no_shapes_for_pt2(input_shapes)
        if not is_pt2(out):
            raise UsageError(f"{path} is a torch.export program; write the result as a .pt2 file, not {out}")
        import torch

        from ._files import atomic_write
        from .api import rewrite
        from ._files import check_output_path

        out_path = check_output_path(out, path)
        new, summary = rewrite(load_pt2(path), layout, grid=grid)
        with atomic_write(out_path) as tmp:
            torch.export.save(new, tmp)
        return summary, []
    from .onnx_pipeline import rewrite_onnx_file

    return rewrite_onnx_file(path, layout, out, input_shapes, grid, check)
