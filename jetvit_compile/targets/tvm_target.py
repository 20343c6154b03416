"""tvm: Apache TVM Relax from the rewritten ExportedProgram, built for ``llvm`` (CPU) or ``cuda``.

``settings.tvm_trials > 0`` tunes the costliest kernels with MetaSchedule and keeps the records in a
database per device, reused by the next compile (see :mod:`.tvm_tuning`); 0 builds untuned. Tuning
takes minutes and untuned TVM kernels are far slower than ONNX Runtime on a CPU, so ``auto`` does not
pick this target; ask for it by name. The artifact is the compiled library (``model.so``) plus the VM
entry point. ``compiled.tuning`` says what tuning did: trials run, seconds, database, tasks, reused,
and the remote that timed the trials. ``settings.tvm_remote`` (``host:port/key``) tunes on a device
behind a TVM RPC tracker; ``tvm_remote.remote_latency_ms(compiled.executable, inputs, remote)``
times the build there (see :mod:`.tvm_remote`).

``settings.tvm_target`` picks the TVM target: None builds for this machine's GPU when TVM sees one, else
for ``llvm``; ``"cuda -arch=sm_90"`` (or a JSON dict) builds for that GPU. Without such a GPU here the
build is compile-only: the CUDA kernels are generated and saved, and calling the result raises
(see :mod:`..compiler.tvm_build_only`, whose ``build_only`` saves the artifact with a manifest that says it was not run).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .._files import atomic_write
from ..errors import RewriteError
from .base import CompileSettings, Compiled, Target
from .tvm_remote import RemoteDevice
from .tvm_script_import import import_tensor_intrinsics
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


# -- import fixes: ops of the window blocks (routed cells, global tokens, padding masks) that TVM 0.27's torch
# importer emits in a form its own legalisation refuses. Each converter handles its case and hands every other
# call back to the importer's own converter.
def _nonfinite(value) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _full(node, importer):
    """``full(shape, -inf)``: topi.full refuses a non-finite fill (it reads the dtype as a string); a broadcast
    scalar constant is the same tensor."""
    from tvm import relax

    size, value = importer.retrieve_args(node)[:2]
    if not _nonfinite(value):
        return importer._full(node)
    dtype = str(importer._convert_data_type(node.meta["val"].dtype, importer.env))
    shape = relax.ShapeExpr(size if isinstance(size, (list, tuple)) else (size,))
    return importer.block_builder.emit(relax.op.broadcast_to(relax.const(value, dtype), shape))


def _masked_fill(node, importer):
    """``masked_fill(mask, -inf)`` becomes ``where(mask, -inf, x)`` (the importer's form goes through full_like)."""
    from tvm import relax

    x, mask, value = importer.retrieve_args(node)[:3]
    dtype = str(x.ty.dtype)
    if not (_nonfinite(value) and "float" in dtype):
        return importer._masked_fill(node)
    return importer.block_builder.emit(relax.op.where(mask, relax.const(value, dtype), x))


def _clamp(node, importer):
    """``clamp`` of an integer tensor by integer bounds: the importer clips with float infinities, which an
    integer clip cannot hold."""
    from tvm import relax

    x = importer.retrieve_args(node)[0]
    low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min")
    high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max")
    dtype = str(x.ty.dtype)
    if "int" not in dtype or not all(b is None or isinstance(b, int) for b in (low, high)):
        return importer._clamp(node)
    for bound, op in ((low, relax.op.maximum), (high, relax.op.minimum)):
        if bound is not None:
            x = importer.block_builder.emit(op(x, relax.const(bound, dtype)))
    return x


def _div_mode(node, importer):
    """``div(x, 8, rounding_mode="floor")`` of an int64 tensor: the importer makes the scalar an int32
    constant, and Relax refuses mixed integer types."""
    from tvm import relax

    x, divisor = importer.retrieve_args(node)[:2]
    dtype = str(x.ty.dtype)
    mode = node.kwargs.get("rounding_mode", node.args[2] if len(node.args) > 2 else None)
    if not isinstance(divisor, int) or mode != "floor" or "int" not in dtype:
        return importer._div(node)
    return importer.block_builder.emit(relax.op.floor_divide(x, relax.const(divisor, dtype)))


IMPORT_FIXES = {"full.default": _full, "masked_fill.Scalar": _masked_fill, "clamp.default": _clamp,
                "div.Tensor_mode": _div_mode}


def import_program(program: torch.export.ExportedProgram):
    """The Relax module of ``program``, weights bound as constants, with :data:`IMPORT_FIXES`."""
    from tvm.relax.frontend.torch import from_exported_program

    return from_exported_program(program, keep_params_as_input=False, custom_convert_map=IMPORT_FIXES)


class TVM(Target):
    name = "tvm"
    auto = False  # tuning takes minutes, untuned kernels lose to ONNX Runtime on CPU; see the module doc

    def available(self) -> tuple[bool, str]:
        try:
            import tvm
            import tvm.relax.frontend.torch  # the importer needs torch and more than the core does
        except Exception as e:  # noqa: BLE001 - a broken install raises more than ImportError
            return False, f"apache-tvm does not import ({type(e).__name__}); pip install 'jetvit-compile[tvm]'"
        kind = "cuda" if tvm.cuda().exist else "llvm (cuda build-only with tvm_target='cuda -arch=sm_XX')"
        return True, f"apache-tvm {tvm.__version__} Relax, {kind}, MetaSchedule tuning when tvm_trials > 0"

    def compile(self, program, inputs, settings: CompileSettings) -> Compiled:
        self._check_remote(settings)
        return self._build(import_program(program), settings)

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

        from .tvm_cuda import CudaBuild, gpu_here, resolve_target

        target = resolve_target(settings.tvm_target)
        build_only = target.kind.name == "cuda" and not gpu_here()
        if build_only and settings.tvm_trials > 0 and not settings.tvm_remote:
            raise RewriteError(f"tvm_trials={settings.tvm_trials}: MetaSchedule times candidates on the GPU, and TVM "
                               "sees none here; build untuned (tvm_trials=0) or tune on it with tvm_remote")
        if settings.tvm_trials > 0:
            executable, tuning = tune_and_build(module, target, settings)
        else:
            if target.kind.name == "cuda":  # dlight's GPU schedules import them (see tvm_script_import)
                import_tensor_intrinsics()
            with target:  # the CUDA codegen reads the arch of the current target
                executable = tvm.compile(module, target=target)
            tuning = {"trials": 0, "seconds": 0.0, "database": None, "tasks": 0, "reused": False, "remote": None}
        if build_only:
            return CudaBuild(executable, target, tuning)
        return _TvmCompiled(executable, tvm.cpu() if target.kind.name == "llvm" else tvm.cuda(), tuning)
