"""tensorrt: Torch-TensorRT's dynamo path on the rewritten ExportedProgram (NVIDIA GPUs).

Imported lazily: where torch_tensorrt or TensorRT is missing, ``available()`` says so and ``auto``
moves on. Precision follows the model's dtype (explicit typing); with half-precision models,
``attention_in_fp32`` asks TensorRT for float32 accumulation in matmuls, so attention scores do not
overflow at high resolution (the most reported TensorRT ViT failure).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .._files import atomic_write
from .base import CompileSettings, Compiled, Target


def trt_compile_kwargs(settings: CompileSettings, inputs: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """Keyword arguments for ``torch_tensorrt.dynamo.compile`` (current API names)."""
    half = any(x.dtype in (torch.float16, torch.bfloat16) for x in inputs)
    kwargs: dict[str, Any] = {
        "arg_inputs": list(inputs),
        "min_block_size": settings.min_block_size,
        "workspace_size": settings.workspace_size,
        "use_explicit_typing": True,  # precision follows the model's dtypes, not a global flag
        "use_fp32_acc": bool(half and settings.attention_in_fp32),
    }
    if settings.timing_cache_path:
        kwargs["timing_cache_path"] = settings.timing_cache_path
    if settings.optimization_level is not None:
        kwargs["optimization_level"] = settings.optimization_level
    return kwargs


class _TrtCompiled(Compiled):
    target = "tensorrt"

    def __init__(self, module, inputs):
        self.module, self.inputs = module, inputs

    def __call__(self, *inputs):
        with torch.no_grad():  # the engine runs on the GPU whatever device the caller's tensors are on
            return self.module(*(x.cuda() for x in inputs))

    def save(self, folder: Path) -> list[str]:
        import torch_tensorrt

        with atomic_write(folder / "model.ep") as tmp:
            torch_tensorrt.save(self.module, tmp, arg_inputs=list(self.inputs))
        return ["model.ep"]


class TensorRT(Target):
    name = "tensorrt"

    def available(self) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            return False, "no CUDA GPU visible to torch (TensorRT needs an NVIDIA GPU)"
        try:
            import torch_tensorrt
        except Exception as e:  # noqa: BLE001 - a missing libnvinfer raises OSError, not ImportError
            return False, (f"torch_tensorrt does not import ({type(e).__name__}: {e}); "
                           "pip install 'jetvit-compile[gpu]' with TensorRT libraries for this torch")
        return True, f"torch_tensorrt {torch_tensorrt.__version__} on {torch.cuda.get_device_name()}"

    def compile(self, program, inputs, settings: CompileSettings) -> Compiled:
        import torch_tensorrt

        inputs = tuple(x.cuda() for x in inputs)
        module = torch_tensorrt.dynamo.compile(program, **trt_compile_kwargs(settings, inputs))
        return _TrtCompiled(module, inputs)
