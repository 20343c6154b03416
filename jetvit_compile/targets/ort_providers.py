"""Which ONNX Runtime execution providers each target name means for an ONNX file, with their options.

``tensorrt`` is ONNX Runtime's TensorRT provider, with CUDA and then CPU behind it: ORT runs the nodes
TensorRT does not take on the next provider in the chain. ``onnxruntime`` is the CUDA provider where
this onnxruntime build has one, else the CPU provider.
"""
from __future__ import annotations

import os
from typing import Any

from .._onnxruntime import installed
from .base import CompileSettings

ORT_TARGETS = ("tensorrt", "onnxruntime")  # the order ``auto`` tries for ONNX files
TENSORRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"

Chain = list[tuple[str, dict[str, Any]]]  # (provider, its options), first choice first


def _ort_providers() -> tuple[str | None, list[str]]:
    """(onnxruntime version, its available providers); (None, []) when it is not installed."""
    ort = installed()
    return (ort.__version__, ort.get_available_providers()) if ort else (None, [])


def tensorrt_options(settings: CompileSettings, cache_dir: str | os.PathLike, half: bool) -> dict[str, Any]:
    """Options of ORT's TensorRT provider for ``settings``.

    Precision follows the model: FP16 kernels only when its inputs are float16 (a float32 model stays
    float32). Engines and the timing cache go to ``cache_dir``, so a second build of the same model on
    the same device is a cache hit.
    """
    options: dict[str, Any] = {
        "trt_fp16_enable": bool(half),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": os.fspath(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": os.fspath(cache_dir),
        "trt_max_workspace_size": int(settings.workspace_size),
    }
    if settings.optimization_level is not None:
        options["trt_builder_optimization_level"] = int(settings.optimization_level)
    return options


def _cuda_or_cpu(providers: list[str], half: bool) -> Chain:
    # ORT's CUDA provider runs float32 matmuls in TF32 by default; a float32 model keeps float32 maths
    return [(CUDA_EP, {} if half else {"use_tf32": False}), (CPU_EP, {})] if CUDA_EP in providers else [(CPU_EP, {})]


def provider_chain(name: str, settings: CompileSettings, cache_dir: str | os.PathLike, half: bool) -> Chain:
    """The providers (with options) an ORT session for target ``name`` is built with."""
    _, providers = _ort_providers()
    if name == "tensorrt":
        return [(TENSORRT_EP, tensorrt_options(settings, cache_dir, half)), *_cuda_or_cpu(providers, half)]
    if name == "onnxruntime":
        return _cuda_or_cpu(providers, half)
    raise ValueError(f"no ONNX Runtime provider chain for target {name!r}")


def available(name: str) -> tuple[bool, str]:
    """(True, what it will use) or (False, why not and what to install)."""
    version, providers = _ort_providers()
    if version is None:
        return False, "onnxruntime is not installed (pip install 'jetvit-compile[cpu]', or [gpu] for CUDA)"
    if name == "tensorrt":
        if TENSORRT_EP not in providers:
            return False, (f"onnxruntime {version} has no {TENSORRT_EP} "
                           "(install onnxruntime-gpu built with TensorRT, and the TensorRT libraries)")
        return True, f"onnxruntime {version} {TENSORRT_EP}"
    if name == "onnxruntime":
        return True, f"onnxruntime {version} {_cuda_or_cpu(providers, False)[0][0]}"
    return False, f"{name} does not run ONNX files; choose one of: {', '.join(ORT_TARGETS)}"
