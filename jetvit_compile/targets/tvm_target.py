"""tvm: Apache TVM Relax with MetaSchedule tuning (the fallback for devices TensorRT does not serve).

Not built yet: this target reports why it is unavailable, so that ``auto`` moves on with a reason.
"""
from __future__ import annotations

from .base import CompileSettings, Compiled, Target


class TVM(Target):
    name = "tvm"

    def available(self) -> tuple[bool, str]:
        try:
            import tvm  # noqa: F401
        except Exception:  # noqa: BLE001 - a broken install raises more than ImportError
            return False, "apache-tvm is not installed (pip install 'jetvit-compile[tvm]')"
        return False, "the TVM target (Relax + MetaSchedule) is not implemented yet in this version"

    def compile(self, program, inputs, settings: CompileSettings) -> Compiled:
        raise NotImplementedError(self.available()[1])
