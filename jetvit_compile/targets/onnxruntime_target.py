"""onnxruntime: the rewritten program exported to ONNX and run by ONNX Runtime (CUDA provider where
present, else CPU)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .._files import atomic_write
from .._onnxruntime import run_owned
from ..errors import RewriteError
from .base import CompileSettings, Compiled, Target
from .ort_providers import Chain


class OrtCompiled(Compiled):
    """A rewritten ONNX model in an ONNX Runtime session; called with torch tensors or numpy arrays."""

    def __init__(self, target: str, blob: bytes, chain: Chain, ort_ops: dict[str, int] | None = None):
        import onnxruntime as ort

        self.target, self.blob, self.ort_ops = target, blob, ort_ops or {}
        self.session = ort.InferenceSession(blob, providers=[p for p, _ in chain],
                                            provider_options=[o for _, o in chain])
        used = self.session.get_providers()
        # the provider options go into the manifest: a deployment builds its session with the same ones
        self.providers = [{"name": p, "options": o, "loaded": p in used} for p, o in chain]
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs):
        feed = {n: (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x))
                for n, x in zip(self.names, inputs)}
        outs = [torch.from_numpy(o) for o in run_owned(self.session, None, feed)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def save(self, folder: Path) -> list[str]:
        with atomic_write(folder / "model.onnx") as tmp:
            Path(tmp).write_bytes(self.blob)
        return ["model.onnx"]


class OnnxRuntime(Target):
    name = "onnxruntime"

    def _provider(self) -> str | None:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        for p in ("CUDAExecutionProvider", "CPUExecutionProvider"):
            if p in providers:
                return p
        return None

    def available(self) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return False, "onnxruntime is not installed (pip install 'jetvit-compile[cpu]', or [gpu] for CUDA)"
        return True, f"onnxruntime {ort.__version__} {self._provider()}"

    def compile(self, program, inputs, settings: CompileSettings) -> Compiled:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx_program = torch.onnx.export(program, inputs, dynamo=True, verbose=False)
        except Exception as e:  # noqa: BLE001 - exporter errors come in many types
            raise RewriteError(f"exporting to ONNX failed: {type(e).__name__}: {e}".splitlines()[0]) from e
        return OrtCompiled(self.name, onnx_program.model_proto.SerializeToString(), [(self._provider(), {})])
