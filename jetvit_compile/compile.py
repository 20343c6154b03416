"""Rewrite, lower on the best available target (saying why each skipped one was skipped), check the
compiled model against the rewritten graph, and save a deployable artifact with a manifest."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

import torch
from torch.utils._pytree import tree_leaves

from ._files import atomic_write
from .api import _as_program, rewrite
from .errors import JetViTError, RewriteError, UsageError, VerificationError
from .layout import Layout
from .profiles.device import describe, device_fingerprint, device_key
from .targets import AUTO_ORDER, TARGETS, CompileSettings, Compiled

ARTIFACT_NAMES = ("model.pt2", "model.onnx", "model.ep", "model.so", "manifest.json")  # what targets write
TOLERANCE = 1e-3  # float32 backends reorder sums; a real lowering bug is orders of magnitude larger


@dataclasses.dataclass
class CompileResult:
    target: str
    compiled: Compiled
    summary: dict[str, int]
    skipped: list[tuple[str, str]]  # (target, why)
    max_abs_error: float
    manifest: dict | None = None


def _max_abs_diff(a, b) -> float:
    la, lb = tree_leaves(a), tree_leaves(b)
    tensors = [(x, y) for x, y in zip(la, lb) if isinstance(x, torch.Tensor)]
    return max(float((x.detach().cpu().float() - y.detach().cpu().float()).abs().max()) for x, y in tensors)


def target_candidates(target: str) -> list[str]:
    if target == "auto":
        return list(AUTO_ORDER)
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; choose auto or one of: {', '.join(AUTO_ORDER)}")
    return [target]


def compile(  # noqa: A001 - the verb users expect, as in torch.compile / torch_tensorrt.compile
    model: torch.export.ExportedProgram,
    layout: Layout | str = "full",
    target: str = "auto",
    inputs: tuple[torch.Tensor, ...] | None = None,
    settings: CompileSettings | None = None,
    output: str | os.PathLike | None = None,
) -> CompileResult:
    """Rewrite ``model`` by ``layout``, lower it on ``target`` (``"auto"``: the first that works here),
    check it against the rewritten graph, and save it into the folder ``output`` when given."""
    from .passes.fx.program import example_inputs

    settings = settings or CompileSettings()
    program, summary = rewrite(_as_program(model), layout)
    inputs = inputs if inputs is not None else example_inputs(program)[0]
    with torch.no_grad():
        reference = program.module()(*inputs)

    def build(name: str) -> tuple[Compiled, float]:
        compiled = TARGETS[name].compile(program, inputs, settings)
        with torch.no_grad():
            return compiled, _max_abs_diff(compiled(*inputs), reference)

    name, compiled, err, skipped = try_targets(target_candidates(target), target, lambda n: target_available(n, target),
                                               build, "the rewritten graph")
    result = CompileResult(name, compiled, summary, skipped, err)
    if output is not None:
        result.manifest = _save(result, Path(output), Layout.coerce(layout), inputs)
    return result


def target_available(name: str, target: str = "auto") -> tuple[bool, str]:
    """Whether ``name`` can build here and, under ``target="auto"``, whether auto picks it."""
    ok, why = TARGETS[name].available()
    if ok and target == "auto" and not TARGETS[name].auto:
        return False, "not chosen by auto (untuned kernels are slower than ONNX Runtime); ask for it by name"
    return ok, why


def auto_target(target: str = "auto") -> str | None:
    """The target ``compile`` would try first here: ``target`` itself when named, else auto's first pick."""
    return next((n for n in target_candidates(target) if target_available(n, target)[0]), None)


def try_targets(
    candidates: list[str],
    target: str,
    available: Callable[[str], tuple[bool, str]],
    build: Callable[[str], tuple[Compiled, float]],
    reference: str,
) -> tuple[str, Compiled, float, list[tuple[str, str]]]:
    """Build on each candidate in turn, skipping (and saying why) what is unavailable, fails or whose output
    differs from ``reference`` by more than TOLERANCE; ``build(name)`` gives (compiled, max abs error).
    Returns (name, compiled, error, skipped). A target named by the user that fails raises at once."""
    skipped: list[tuple[str, str]] = []
    for name in candidates:
        ok, why = available(name)
        if not ok:
            skipped.append((name, why))
            continue
        try:
            compiled, err = build(name)
        except JetViTError as e:
            skipped.append((name, str(e)))
            continue
        except Exception as e:  # noqa: BLE001 - backends fail in their own ways; auto moves on
            skipped.append((name, f"build failed: {type(e).__name__}: {e}".splitlines()[0]))
            continue
        if not err <= TOLERANCE:
            skipped.append((name, f"output differs from {reference} by {err:.2e} (> {TOLERANCE:g})"))
            if target != "auto":
                raise VerificationError(f"target {name}: compiled output differs from {reference} by {err:.2e}")
            continue
        return name, compiled, err, skipped
    if target != "auto":
        raise RewriteError(f"target {target} cannot compile the model here: {skipped[0][1]}")
    reasons = "; ".join(f"{n}: {w}" for n, w in skipped)
    raise RewriteError(f"no target could compile the model ({reasons})")


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


def _save(result: CompileResult, folder: Path, layout: Layout, inputs) -> dict:
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
