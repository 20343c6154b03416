"""tvm: Apache TVM Relax from the rewritten ExportedProgram, built for ``llvm`` (CPU) or ``cuda``.

Built untuned: MetaSchedule tuning (trial budget, tuning database kept per device) is not wired in
yet, and untuned TVM kernels are far slower than ONNX Runtime on a CPU, so ``auto`` does not pick this
target; ask for it by name. The artifact is the compiled library (``model.so``) plus the VM entry point.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .._files import atomic_write
from .base import CompileSettings, Compiled, Target


class _TvmCompiled(Compiled):
    target = "tvm"

    def __init__(self, executable, device):
        from tvm import relax

        self.executable, self.device = executable, device
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
    auto = False  # untuned kernels lose to ONNX Runtime on CPU; see the module doc

    def available(self) -> tuple[bool, str]:
        try:
            import tvm
            from tvm.relax.frontend.torch import from_exported_program  # noqa: F401
        except Exception as e:  # noqa: BLE001 - a broken install raises more than ImportError
            return False, f"apache-tvm does not import ({type(e).__name__}); pip install 'jetvit-compile[tvm]'"
        kind = "cuda" if tvm.cuda().exist else "llvm"
        return True, f"apache-tvm {tvm.__version__} Relax, {kind}, untuned"

    def compile(self, program, inputs, settings: CompileSettings) -> Compiled:
        import tvm
        from tvm.relax.frontend.torch import from_exported_program

        kind = "cuda" if tvm.cuda().exist else "llvm"
        target = tvm.target.Target({"kind": "llvm", "num-cores": os.cpu_count() or 1} if kind == "llvm" else "cuda")
        module = from_exported_program(program, keep_params_as_input=False)
        executable = tvm.compile(module, target=target)
        return _TvmCompiled(executable, tvm.cpu() if kind == "llvm" else tvm.cuda())
