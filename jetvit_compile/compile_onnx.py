"""Compile an ONNX file: rewrite it by a layout, build an ONNX Runtime session on the first provider
chain that works here (TensorRT provider, then CUDA / CPU; for the latter, full attention as ONNX Runtime's
own kernel; with ``quantize="int8"``, its linear layers in int8), check it against the rewritten model on the
CPU provider, and save ``model.onnx`` with a manifest."""
from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from .attention.core import ORT_DOMAIN
from .compile import ARTIFACT_NAMES, CompileResult, _save, try_targets
from .errors import RewriteError, UsageError
from .layout import Layout
from .onnx_pipeline import _onnxruntime, input_feed, prepare
from .passes.onnx.quantize import check_scheme, quantize_linear_layers
from .passes.onnx.rewrite import rewrite_onnx
from .targets.base import CompileSettings
from .targets.onnxruntime_target import OrtCompiled
from .targets.ort_providers import CPU_EP, ORT_TARGETS, available, provider_chain


ONNX_TARGETS = (*ORT_TARGETS, "tvm")  # tvm by name only: untuned or briefly tuned it loses to ONNX Runtime


def onnx_target_candidates(target: str, quantize: str | None = None) -> list[str]:
    check_scheme(quantize)
    if quantize is not None and target not in ("auto", "onnxruntime"):
        raise UsageError(f"--quantize {quantize} is for the onnxruntime target (ONNX Runtime's CPU int8 kernels); "
                         f"use --target onnxruntime or auto, not {target}")
    if target == "auto":
        return ["onnxruntime"] if quantize else list(ORT_TARGETS)
    if target not in ONNX_TARGETS:
        raise UsageError(f"target {target!r} does not take ONNX files; choose auto, {', '.join(ONNX_TARGETS)} "
                         "(torch_compile and torch take a torch.export .pt2 program)")
    return [target]


def _target_available(name: str) -> tuple[bool, str]:
    if name == "tvm":
        from .targets import TARGETS

        return TARGETS["tvm"].available()
    return available(name)


def _build(name: str, blob: bytes, feed: dict[str, np.ndarray], settings: CompileSettings, cache: Path, half: bool):
    """The compiled model and its outputs on ``feed`` (numpy arrays, in output order)."""
    if name == "tvm":
        import torch

        from .targets import TARGETS

        compiled = TARGETS["tvm"].compile_onnx(blob, {k: v.shape for k, v in feed.items()}, settings)
        out = compiled(*(torch.from_numpy(np.ascontiguousarray(v)) for v in feed.values()))
        outs = out if isinstance(out, tuple) else (out,)
        return compiled, [o.numpy() for o in outs]
    chain = provider_chain(name, settings, cache, half)
    if name == "tensorrt":
        cache.mkdir(parents=True, exist_ok=True)
    compiled = OrtCompiled(name, blob, chain, ort_ops(blob) if name == "onnxruntime" else {})
    first = chain[0][0]
    if first not in compiled.session.get_providers():  # ORT falls back quietly when a provider fails to load
        raise RewriteError(f"{first} did not load (are its CUDA / TensorRT libraries on the library path?)")
    return compiled, compiled.session.run(None, feed)


def ort_ops(blob: bytes) -> dict[str, int]:
    """``{op: count}`` of ONNX Runtime's own (``com.microsoft``) ops in the serialized model ``blob``."""
    nodes = onnx.load_model_from_string(blob).graph.node
    return dict(collections.Counter(n.op_type for n in nodes if n.domain == ORT_DOMAIN))


def trt_cache_folder(output: str | os.PathLike | None) -> Path:
    """Where TensorRT engines and its timing cache go: beside the output folder, else in the user cache."""
    if output is None:
        from .images import cache_dir

        return cache_dir("ort-tensorrt")
    out = Path(output)
    return out.parent / f"{out.name}.trt-cache"


def _max_abs_diff(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    if [np.shape(g) for g in got] != [np.shape(w) for w in want]:
        raise RewriteError(f"output shapes {[np.shape(g) for g in got]} differ from the rewritten model's "
                           f"{[np.shape(w) for w in want]}")
    return max(float(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)).max()) for g, w in zip(got, want))


def _check_output(output: str | os.PathLike, path: str | os.PathLike) -> None:
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder; compile writes a folder")
    if Path(path).resolve().parent == out.resolve() and Path(path).name in ARTIFACT_NAMES:
        raise UsageError(f"writing into {out} would overwrite the input {path}; choose another output folder")


def compile_onnx(
    path: str | os.PathLike,
    layout: Layout | str = "full",
    target: str = "auto",
    input_shapes: str | dict | None = None,
    settings: CompileSettings | None = None,
    output: str | os.PathLike | None = None,
    quantize: str | None = None,
) -> CompileResult:
    """Rewrite the ONNX file ``path`` by ``layout``, build it on ``target`` (``"auto"``: tensorrt, then
    onnxruntime), check it against the rewritten model on the CPU provider, save it into ``output``.

    ``quantize="int8"`` (onnxruntime only) quantizes the linear layers after the rewrite
    (:mod:`.passes.onnx.quantize`); the check is then against the quantized model on the CPU provider, and
    the manifest records how far the quantized output moved from the float one on the check's input."""
    candidates = onnx_target_candidates(target, quantize)
    if output is not None:
        _check_output(output, path)
    ok, why = _target_available(target) if target != "auto" else (True, "")
    if not ok:  # say so before the rewrite, not after it
        raise RewriteError(f"target {target} cannot compile {Path(path).name} here: {why}")
    settings = settings or CompileSettings()
    layout = Layout.coerce(layout)
    prepared = prepare(path, input_shapes)  # read once: the onnxruntime target rewrites its own copy
    model, summary, _ = rewrite_onnx(prepared.clone(), layout)
    feed = input_feed(model)
    blob = ir.serde.serialize_model(model).SerializeToString()
    reference = _onnxruntime().InferenceSession(blob, providers=[CPU_EP]).run(None, feed)
    half = any(x.dtype == np.float16 for x in feed.values())

    def build(name: str):
        target_blob, check, quantized = blob, reference, None
        if name == "onnxruntime":  # full attention as its own kernel (TensorRT fuses the plain graph itself)
            lowered, _, _ = rewrite_onnx(prepared.clone(), layout, ort_kernels=True)
            target_blob = ir.serde.serialize_model(lowered).SerializeToString()
        if quantize:  # checked against the quantized model; how far that moved from float goes in the manifest
            target_blob, layers = quantize_linear_layers(target_blob, quantize)
            check = _onnxruntime().InferenceSession(target_blob, providers=[CPU_EP]).run(None, feed)
            quantized = {"scheme": quantize, "linear_layers": layers,
                         "max_abs_diff_from_float": _max_abs_diff(check, reference)}
        compiled, outputs = _build(name, target_blob, feed, settings, trt_cache_folder(output), half)
        compiled.quantized = quantized
        return compiled, _max_abs_diff(outputs, check)

    name, compiled, err, skipped = try_targets(candidates, target, _target_available, build, "the rewritten model")
    result = CompileResult(name, compiled, summary, skipped, err)
    if output is not None:
        result.manifest = _save(result, Path(output), layout, tuple(feed.values()))
    return result
