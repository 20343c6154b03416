"""Compile an ONNX model: lower it by a layout for the target (:mod:`..passes.onnx.pipeline`: ONNX Runtime's
own attention kernel for the onnxruntime target, int8 linear layers with ``quantize``), build it on the first
target that works here (TensorRT provider, then CUDA / CPU; TVM when named), check it against the rewritten
model on the CPU provider, and save ``model.onnx`` with a manifest."""
from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import onnx

from .._onnxruntime import cpu_session
from ..attention.core import ORT_DOMAIN
from ..errors import RewriteError, UsageError
from ..layout import Layout
from ..passes.onnx.pipeline import OnnxLowering
from ..passes.onnx.quantize import check_scheme
from ..targets import TARGETS, CompileSettings
from ..targets.onnxruntime_target import OrtCompiled
from ..targets.ort_providers import ORT_TARGETS, available, provider_chain
from .artifact import CompileResult, check_output_folder, save_artifact
from .fallback import try_targets


def _ort_build(name: str):
    def build(blob: bytes, feed: dict[str, np.ndarray], settings: CompileSettings, cache: Path, half: bool):
        chain = provider_chain(name, settings, cache, half)
        if name == "tensorrt":
            cache.mkdir(parents=True, exist_ok=True)
        compiled = OrtCompiled(name, blob, chain, ort_ops(blob) if name == "onnxruntime" else {})
        first = chain[0][0]
        if first not in compiled.session.get_providers():  # ORT falls back quietly when a provider fails to load
            raise RewriteError(f"{first} did not load (are its CUDA / TensorRT libraries on the library path?)")
        return compiled, compiled.session.run(None, feed)
    return build


def _tvm_build(blob: bytes, feed: dict[str, np.ndarray], settings: CompileSettings, cache: Path, half: bool):
    import torch

    compiled = TARGETS["tvm"].compile_onnx(blob, {k: v.shape for k, v in feed.items()}, settings)
    out = compiled(*(torch.from_numpy(np.ascontiguousarray(v)) for v in feed.values()))
    return compiled, [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


# The targets that take ONNX files, in auto's order: (available, lowering, build). TVM is by name only:
# untuned or briefly tuned it loses to ONNX Runtime. Only the onnxruntime target runs ORT's own kernels
# (TensorRT fuses the plain graph itself).
ONNX_TARGETS = {
    "tensorrt": (lambda: available("tensorrt"), OnnxLowering(), _ort_build("tensorrt")),
    "onnxruntime": (lambda: available("onnxruntime"), OnnxLowering(ort_kernels=True), _ort_build("onnxruntime")),
    "tvm": (lambda: TARGETS["tvm"].available(), OnnxLowering(), _tvm_build),
}
AUTO_ONNX = ORT_TARGETS


def onnx_target_candidates(target: str, quantize: str | None = None) -> list[str]:
    check_scheme(quantize)
    if quantize is not None and target not in ("auto", "onnxruntime"):
        raise UsageError(f"--quantize {quantize} is for the onnxruntime target (ONNX Runtime's CPU int8 kernels); "
                         f"use --target onnxruntime or auto, not {target}")
    if target == "auto":
        return ["onnxruntime"] if quantize else list(AUTO_ONNX)
    if target not in ONNX_TARGETS:
        raise UsageError(f"target {target!r} does not take ONNX files; choose auto, {', '.join(ONNX_TARGETS)} "
                         "(torch_compile and torch take a torch.export .pt2 program)")
    return [target]


def ort_ops(blob: bytes) -> dict[str, int]:
    """``{op: count}`` of ONNX Runtime's own (``com.microsoft``) ops in the serialized model ``blob``."""
    nodes = onnx.load_model_from_string(blob).graph.node
    return dict(collections.Counter(n.op_type for n in nodes if n.domain == ORT_DOMAIN))


def trt_cache_folder(output: str | os.PathLike | None) -> Path:
    """Where TensorRT engines and its timing cache go: beside the output folder, else in the user cache."""
    if output is None:
        from ..images import cache_dir

        return cache_dir("ort-tensorrt")
    out = Path(output)
    return out.parent / f"{out.name}.trt-cache"


def _max_abs_diff(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    if [np.shape(g) for g in got] != [np.shape(w) for w in want]:
        raise RewriteError(f"output shapes {[np.shape(g) for g in got]} differ from the rewritten model's "
                           f"{[np.shape(w) for w in want]}")
    return max(float(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)).max()) for g, w in zip(got, want))


def compile_onnx_model(model, layout: Layout | str = "full", target: str = "auto",
                       settings: CompileSettings | None = None, output: str | os.PathLike | None = None,
                       quantize: str | None = None) -> CompileResult:
    """``model`` (a front-end OnnxModel) lowered by ``layout`` for ``target`` (``"auto"``: tensorrt, then
    onnxruntime), checked against the portable rewrite on the CPU provider, saved into ``output``.

    ``quantize="int8"`` (onnxruntime only) quantizes the linear layers after the rewrite; the check is then
    against the quantized model on the CPU provider, and the manifest records how far the quantized output
    moved from the float one on the check's input."""
    candidates = onnx_target_candidates(target, quantize)
    if output is not None:
        check_output_folder(output, model.path)
    ok, why = ONNX_TARGETS[target][0]() if target != "auto" else (True, "")
    if not ok:  # say so before the rewrite, not after it
        raise RewriteError(f"target {target} cannot compile {model.label} here: {why}")
    settings = settings or CompileSettings()
    layout = Layout.coerce(layout)
    portable = model.lower(layout)
    feed = model.feed()
    reference = cpu_session(portable.blob).run(None, feed)
    half = any(x.dtype == np.float16 for x in feed.values())
    lowerings: dict[str, dict[str, int]] = {}

    def build(name: str):
        _, lowering, build_on = ONNX_TARGETS[name]
        lowering = OnnxLowering(lowering.ort_kernels, quantize)
        lowered = portable if lowering == OnnxLowering() else model.lower(layout, lowering)
        lowerings[name] = lowered.counts
        check, quantized = reference, None
        if quantize:  # checked against the quantized model; how far that moved from float goes in the manifest
            check = cpu_session(lowered.blob).run(None, feed)
            quantized = {"scheme": quantize, "linear_layers": lowered.counts["to_int8"],
                         "max_abs_diff_from_float": _max_abs_diff(check, reference)}
        compiled, outputs = build_on(lowered.blob, feed, settings, trt_cache_folder(output), half)
        compiled.quantized = quantized
        return compiled, _max_abs_diff(outputs, check)

    name, compiled, err, skipped = try_targets(candidates, target, lambda n: ONNX_TARGETS[n][0](), build,
                                               "the rewritten model")
    result = CompileResult(name, compiled, portable.counts, skipped, err, lowering=lowerings[name])
    if output is not None:
        result.manifest = save_artifact(result, Path(output), layout, tuple(feed.values()))
    return result
