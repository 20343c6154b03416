"""torch: the rewritten ExportedProgram run as it is (eager), or through ``torch.compile``."""
from __future__ import annotations

from pathlib import Path

import torch

from .._files import atomic_write
from .base import CompileSettings, Compiled, Target


class _TorchCompiled(Compiled):
    def __init__(self, name: str, program: torch.export.ExportedProgram, fn):
        self.target, self.program, self.fn = name, program, fn

    def __call__(self, *inputs):
        with torch.no_grad():
            return self.fn(*inputs)

    def save(self, folder: Path) -> list[str]:
        # torch.compile's kernels are not portable files: ship the program, compile where it runs
        with atomic_write(folder / "model.pt2") as tmp:
            torch.export.save(self.program, tmp)
        return ["model.pt2"]


class TorchEager(Target):
    name = "torch"

    def available(self) -> tuple[bool, str]:
        return True, f"torch {torch.__version__} eager"

    def compile(self, program, inputs, settings: CompileSettings) -> Compiled:
        return _TorchCompiled(self.name, program, program.module())


class TorchCompile(Target):
    name = "torch_compile"

    def available(self) -> tuple[bool, str]:
        try:
            import torch._inductor  # noqa: F401
        except Exception as e:  # noqa: BLE001
            return False, f"torch.compile's inductor backend does not import here ({type(e).__name__}: {e})"
        return True, f"torch {torch.__version__} torch.compile (inductor)"

    def compile(self, program, inputs, settings: CompileSettings) -> Compiled:
        fn = torch.compile(program.module(), mode=settings.torch_compile_mode)
        with torch.no_grad():
            fn(*inputs)  # compile now, not on the user's first call
        return _TorchCompiled(self.name, program, fn)
