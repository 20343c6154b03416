"""What a compile returns and writes: the compiled model, and a folder with its files and ``manifest.json``."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .._files import atomic_write
from ..errors import UsageError
from ..layout import Layout
from ..profiles.device import describe, device_fingerprint, device_key
from ..targets import Compiled

ARTIFACT_NAMES = ("model.pt2", "model.onnx", "model.ep", "model.so", "manifest.json")  # what targets write


@dataclasses.dataclass
class CompileResult:
    target: str
    compiled: Compiled
    summary: dict[str, int]
    skipped: list[tuple[str, str]]  # (target, why)
    max_abs_error: float
    manifest: dict | None = None
    lowering: dict[str, int] = dataclasses.field(default_factory=dict)  # {pass: count} of the target's lowering


def check_output_folder(output: str | os.PathLike, model_path: str | os.PathLike | None) -> Path:
    """The output folder, after refusing one that is a file or would overwrite the model it compiles."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder; compile writes a folder")
    if model_path is not None and out.resolve() == Path(model_path).resolve():
        raise UsageError(f"output {out} is the input model; write the result to another folder")
    if model_path is not None and Path(model_path).resolve().parent == out.resolve() \
            and Path(model_path).name in ARTIFACT_NAMES:
        raise UsageError(f"writing into {out} would overwrite the input {model_path}; choose another output folder")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"output folder {parent} does not exist; create it first")
    return out


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("jetvit-compile", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "torch-tensorrt", "tensorrt",
                 "apache-tvm"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def save_artifact(result: CompileResult, folder: Path, layout: Layout, inputs) -> dict:
    """Write the compiled model's files and ``manifest.json`` into ``folder``; return the manifest."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"output {folder} exists and is not a folder; compile writes a folder")
    folder.mkdir(parents=True, exist_ok=True)
    files = result.compiled.save(folder)
    manifest = {
        "target": result.target,
        "files": files,
        "versions": _versions(),
        "device": describe(device_fingerprint()),
        "device_key": device_key(),
        "layout": str(layout),
        "passes": result.summary,
        "input_shapes": [list(x.shape) for x in inputs],
        "input_dtypes": [str(x.dtype).removeprefix("torch.") for x in inputs],
        "max_abs_error_vs_rewritten": result.max_abs_error,
        "skipped": [{"target": n, "why": w} for n, w in result.skipped],
    }
    if result.lowering:  # the target's own lowering passes and what each changed
        manifest["lowering"] = result.lowering
    if getattr(result.compiled, "tuning", None) is not None:  # tvm: trials run, seconds, database, reused
        manifest["tuning"] = result.compiled.tuning
    if getattr(result.compiled, "providers", None) is not None:  # ONNX files: ORT providers, options a deployment reuses
        manifest["providers"] = result.compiled.providers
    if getattr(result.compiled, "ort_ops", None):  # onnxruntime: its own kernels the model was lowered to
        manifest["onnxruntime_ops"] = result.compiled.ort_ops
    if getattr(result.compiled, "quantized", None):  # --quantize: scheme, layers, distance from the float model
        manifest["quantized"] = result.compiled.quantized
    with atomic_write(folder / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
