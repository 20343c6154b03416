"""tvm: Apache TVM Relax from the rewritten ExportedProgram, built for ``llvm`` (CPU) or ``cuda``.

``settings.tvm_trials > 0`` tunes the costliest kernels with MetaSchedule and keeps the records in a
database per device, reused by the next compile (see :mod:`.tvm_tuning`); 0 builds untuned. Tuning
takes minutes and untuned TVM kernels are far slower than ONNX Runtime on a CPU, so ``auto`` does not
pick this target; ask for it by name. The artifact is the compiled library (``model.so``) plus the VM
entry point. ``compiled.tuning`` says what tuning did: trials run, seconds, database, tasks, reused,
and the remote that timed the trials. ``settings.tvm_remote`` (``host:port/key``) tunes on a device
behind a TVM RPC tracker; ``tvm_remote.remote_latency_ms(compiled.executable, inputs, remote)``
times the build there (see :mod:`.tvm_remote`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .._files import atomic_write
from .base import CompileSettings, Compiled, Target
from .tvm_remote import RemoteDevice
from .tvm_tuning import tune_and_build


class _TvmCompiled(Compiled):
    target = "tvm"

    def __init__(self, executable, device, tuning: dict):
        from tvm import relax

        self.executable, self.device, self.tuning = executable, device, tuning
        self.vm = relax.VirtualMachine(executable, device)

    def __call__(self, *inputs):
        import tvm

        out = self.vm["main"](*(tvm.runtime.tensor(x.detach().cpu().numpy(), self.device) for x in inputs))
        leaves = list(out) if not hasattr(out, "numpy") else [out]
        tensors = [torch.from_numpy(np.asarray(t.numpy())) for t in leaves]
        return tensors[0] if len(tensors) == 1 else tuple(tensors)

    def save(self, folder: Path) -> list[str]:
        with atomic_write(folder / "model.so") as tmp:
            os.unlink(tmp)  # export_library writes the file itself, by name
            self.executable.export_library(tmp)
        return ["model.so"]


class TVM(Target):
    name = "tvm"
    auto = False  # tuning takes minutes, untuned kernels lose to ONNX Runtime on CPU; see the module doc

    def available(self) -> tuple[bool, str]:
        try:
            import tvm
            import tvm.relax.frontend.torch  # the importer needs torch and more than the core does
        except Exception as e:  # noqa: BLE001 - a broken install raises more than ImportError
            return False, f"apache-tvm does not import ({type(e).__name__}); pip install 'jetvit-compile[tvm]'"
        kind = "cuda" if tvm.cuda().exist else "llvm"
        return True, f"apache-tvm {tvm.__version__} Relax, {kind}, MetaSchedule tuning when tvm_trials > 0"

    def compile(self, program, inputs, settings: CompileSettings) -> Compiled:
        from tvm.relax.frontend.torch import from_exported_program

        self._check_remote(settings)
        return self._build(from_exported_program(program, keep_params_as_input=False), settings)

    def compile_onnx(self, model_bytes: bytes, shapes: dict[str, tuple[int, ...]], settings: CompileSettings) -> Compiled:
        """Relax from an ONNX model (a serialized ``ModelProto``) at concrete input ``shapes``; built and
        tuned as :meth:`compile` builds a program."""
        import onnx
        from tvm.relax.frontend.onnx import from_onnx

        self._check_remote(settings)
        proto = onnx.ModelProto.FromString(model_bytes)
        return self._build(from_onnx(proto, shape_dict={k: list(v) for k, v in shapes.items()}), settings)

    @staticmethod
    def _check_remote(settings: CompileSettings) -> None:
        if settings.tvm_remote:  # a spec that does not parse fails here even when nothing is tuned
            RemoteDevice.parse(settings.tvm_remote)

    def _build(self, module, settings: CompileSettings) -> Compiled:
        import tvm

        kind = "cuda" if tvm.cuda().exist else "llvm"
        # from_device reads the GPU's arch and thread limits, which MetaSchedule's GPU rules need
        target = (tvm.target.Target({"kind": "llvm", "num-cores": os.cpu_count() or 1}) if kind == "llvm"
                  else tvm.target.Target.from_device(tvm.cuda()))
        if settings.tvm_trials > 0:
            executable, tuning = tune_and_build(module, target, settings)
        else:
            executable = tvm.compile(module, target=target)
            tuning = {"trials": 0, "seconds": 0.0, "database": None, "tasks": 0, "reused": False, "remote": None}
        return _TvmCompiled(executable, tvm.cpu() if kind == "llvm" else tvm.cuda(), tuning)
