"""The one place that asks what a model is: an ExportedProgram, a ``.pt2`` file, an ONNX file or ``onnx_ir`` model.

What is opened is checked before any work: the arguments' types, the file readable as a graph (a broken file
is one clear error, never the reader's traceback), and the attention at this input size fitting in this
machine's memory (:func:`check_fits_memory`)."""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

from ..errors import JetViTError, UnsupportedModelError, UsageError
from .base import ViTModel

INPUT_SHAPES_ONNX_ONLY = "--input-shape applies to ONNX files; export the torch program at the size you need"


def check_program_options(source, *, input_shapes=None, quantize: str | None = None) -> None:
    """Refuse, before anything is read, the options a torch.export program (in memory or ``.pt2``) cannot take."""
    if not (isinstance(source, torch.export.ExportedProgram)
            or (isinstance(source, (str, os.PathLike)) and Path(source).suffix == ".pt2")):
        return
    if input_shapes:
        raise UsageError(INPUT_SHAPES_ONNX_ONLY)
    if quantize:
        raise UsageError("--quantize applies to ONNX files compiled for onnxruntime; export the program to ONNX first")


def open_model(source, input_shapes: str | dict | None = None, grid: tuple[int, int] | None = None) -> ViTModel:
    """``source`` behind the model interface, its attention sites found; a ViTModel is returned as it is."""
    _check_arguments(input_shapes, grid)
    if isinstance(source, ViTModel):
        if input_shapes or grid:
            raise UsageError("input shapes and grid are set when a model is opened; open it again with them")
        return source
    vit = _open(source, input_shapes, grid)
    check_fits_memory(vit)
    return vit


def _open(source, input_shapes, grid) -> ViTModel:
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
        with _quiet("torch.export", "torch._export", "torch"):
            program = load_pt2(source)
        return ProgramModel(program, grid, path=source)
    import onnx_ir as ir

    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() != ".onnx":
        raise UsageError(f"{source}: jetvit-compile takes a torch.export program saved as .pt2 or an .onnx file "
                         f"(the file's name says which), not {Path(source).suffix or 'a file without a suffix'}")
    if isinstance(source, (str, os.PathLike, ir.Model)):
        from .onnx_file import OnnxModel

        where = str(source) if isinstance(source, (str, os.PathLike)) else "the ONNX model"
        try:
            with _quiet("onnx_ir.serde"):  # it logs every undefined value of a broken graph; we say it once
                return OnnxModel(source, input_shapes, grid)
        except (JetViTError, MemoryError, OSError):
            raise
        except Exception as e:  # noqa: BLE001 - the readers raise anything for a graph that is not valid ONNX
            missing = _missing_values_in(source)
            if missing:
                raise UnsupportedModelError(_missing_message(where, missing)) from None
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise UnsupportedModelError(f"{where}: the ONNX graph cannot be read ({type(e).__name__}: {first}); "
                                        "check it with python -m onnx.checker, or export it again") from None
    raise UsageError(f"expected a torch.export.ExportedProgram, or a .pt2 / .onnx file path, got {type(source).__name__}")


def _check_arguments(input_shapes, grid) -> None:
    if input_shapes is not None and not isinstance(input_shapes, (str, dict)):
        raise UsageError(f"input_shapes must be a string like 'input:1x3x518x518' or a dict of name -> shape, "
                         f"got {type(input_shapes).__name__}")
    if grid is not None:
        if not (isinstance(grid, (tuple, list)) and len(grid) == 2
                and all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid)):
            raise UsageError(f"grid must be (rows, columns), two integers of at least 1, e.g. (37, 37); got {grid!r}")


@contextlib.contextmanager
def _quiet(*names: str):
    """Readers log what went wrong (torch.export.load: its whole traceback) before they raise; the one error
    we raise says it, so their loggers are silenced while they read."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _missing_values_in(source) -> list[tuple[str, str]]:
    """(node, input) pairs whose input no graph input, initializer or earlier node provides."""
    try:
        import onnx

        if isinstance(source, (str, os.PathLike)):
            graph = onnx.load(str(source), load_external_data=False).graph
        else:
            import onnx_ir as ir

            graph = ir.to_proto(source).graph
    except Exception:  # noqa: BLE001 - unreadable: the caller says so
        return []
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    missing = []
    for node in graph.node:
        missing += [(node.name or node.op_type, name) for name in node.input if name not in known]
        known.update(node.output)
    return missing


def _missing_message(where: str, missing: list[tuple[str, str]]) -> str:
    listed = ", ".join(f"{value!r} (read by {node})" for node, value in missing[:8])
    more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
    return (f"{where}: the graph reads values nothing defines: {listed}{more} (a missing initializer or "
            "input: is the file truncated, or its weights saved elsewhere?); export the model again")


def physical_memory() -> int | None:
    """Bytes of RAM in this machine (None where it cannot be told)."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - psutil missing: ask the OS
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None


def attention_bytes(site) -> int:
    """A floor on the memory one site's full attention needs: its logits and their softmax,
    batch x heads x tokens² each, in the site's dtype (the rest of the model needs more, never less)."""
    itemsize = torch.empty((), dtype=getattr(torch, site.dtype, torch.float32)).element_size()
    return 2 * site.batch * site.num_heads * site.tokens ** 2 * itemsize


def check_fits_memory(vit: ViTModel, memory: int | None = None) -> None:
    """Refuse, from the shapes alone, a model whose attention cannot fit in this machine's RAM."""
    memory = physical_memory() if memory is None else memory
    if not memory or not vit.sites:
        return
    site = max(vit.sites, key=attention_bytes)
    need = attention_bytes(site)
    if need > memory:
        raise UsageError(
            f"{vit.label}: at {site.tokens} tokens ({site.grid[0]}x{site.grid[1]} patches), {site.num_heads} heads, "
            f"one attention's logits take {need / 2**30:.1f} GiB (2 x batch {site.batch} x heads x tokens² x "
            f"{need // (2 * site.batch * site.num_heads * site.tokens ** 2)} bytes), more than this machine's "
            f"{memory / 2**30:.1f} GiB of RAM; give a smaller --input-shape")
