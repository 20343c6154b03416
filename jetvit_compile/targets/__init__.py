"""Lowering targets behind one interface, and the order ``auto`` tries them in."""
from __future__ import annotations

from .base import CompileSettings, Compiled, Target
from .onnxruntime_target import OnnxRuntime
from .tensorrt_target import TensorRT, trt_compile_kwargs
from .torch_eager import TorchCompile, TorchEager
from .tvm_target import TVM

# fastest first where each runs: TensorRT on NVIDIA GPUs, TVM (once tuned; see Target.auto), ONNX Runtime, torch
TARGETS: dict[str, Target] = {t.name: t for t in (TensorRT(), TVM(), OnnxRuntime(), TorchCompile(), TorchEager())}
AUTO_ORDER = ("tensorrt", "tvm", "onnxruntime", "torch_compile", "torch")

__all__ = ["TARGETS", "AUTO_ORDER", "CompileSettings", "Compiled", "Target", "trt_compile_kwargs"]
