"""The one place that asks what a model is: an ExportedProgram, a ``.pt2`` file, an ONNX file or ``onnx_ir`` model."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import UsageError
from .base import ViTModel

INPUT_SHAPES_ONNX_ONLY = "--input-shape applies to ONNX files; export the torch program at the size you need"


def open_model(source, input_shapes: str | dict | None = None, grid: tuple[int, int] | None = None) -> ViTModel:
    """``source`` behind the model interface, its attention sites found; a ViTModel is returned as it is."""
    if isinstance(source, ViTModel):
        if input_shapes or grid:
            raise UsageError("input shapes and grid are set when a model is opened; open it again with them")
        return source
    if isinstance(source, torch.nn.Module):
        raise UsageError("got an nn.Module; export it first: ep = torch.export.export(model, (example_input,)), "
                         "then pass ep (the rewrite reads the exported graph, not Python code)")
    if isinstance(source, torch.export.ExportedProgram) or (isinstance(source, (str, os.PathLike))
                                                            and Path(source).suffix == ".pt2"):
        from .torch_program import ProgramModel, load_pt2

        if input_shapes:
            raise UsageError(INPUT_SHAPES_ONNX_ONLY)
        if isinstance(source, torch.export.ExportedProgram):
            return ProgramModel(source, grid)
        return ProgramModel(load_pt2(source), grid, path=source)
    import onnx_ir as ir

    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() != ".onnx":
        raise UsageError(f"{source}: jetvit-compile takes a torch.export program saved as .pt2 or an .onnx file "
                         f"(the file's name says which), not {Path(source).suffix or 'a file without a suffix'}")
    if isinstance(source, (str, os.PathLike, ir.Model)):
        from .onnx_file import OnnxModel

        return OnnxModel(source, input_shapes, grid)
    raise UsageError(f"expected a torch.export.ExportedProgram, or a .pt2 / .onnx file path, got {type(source).__name__}")
