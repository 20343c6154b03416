"""The tvm target's CUDA build, also where no GPU is: build for ``cuda -arch=sm_XX``, save it, do not run it.

TVM generates CUDA kernels without a GPU: ``tvm.compile`` for a CUDA target applies the dlight default
schedules (``tvm.s_tir.dlight``: matmul, GEMV, reductions, fallback) and TVM's CUDA code generator, and the
VM executable carries the kernels' CUDA source. A TVM wheel without the CUDA runtime (the CPU wheel) keeps
that source and cannot launch it; a CUDA-enabled TVM on the GPU machine loads and runs the library.

:func:`..compiler.tvm_build_only.build_only` rewrites a program by a layout, builds it for the GPU, compiles the CUDA source with
``nvcc`` for the same arch when nvcc is on the PATH (so the kernels are known to compile for that GPU, not
only to have been generated), and saves ``model.so`` (the VM executable), ``model.cu`` (the kernels),
``model.<arch>.cubin`` and a ``manifest.json`` that says what was built, for which GPU, the sizes, and that
nothing was run. Calling the built object raises :class:`BuildOnlyError`; ``load_build`` runs the saved
library on a machine whose TVM sees a GPU.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from .._files import atomic_write
from ..errors import RewriteError, UsageError
from .base import Compiled

ARCH_HINT = "sm_90 (H100/H200), sm_89 (L4, RTX 40xx), sm_87 (Jetson Orin), sm_86 (RTX 30xx), sm_80 (A100)"
_KERNEL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)\s*\(")


class BuildOnlyError(RewriteError):
    """A build for a GPU that is not here was asked to run."""


def gpu_here() -> bool:
    """Whether TVM can launch CUDA kernels here (a GPU, and a TVM runtime built with CUDA)."""
    import tvm

    try:
        return bool(tvm.cuda().exist)
    except Exception:  # noqa: BLE001 - a runtime without CUDA may raise instead of answering False
        return False


def parse_target(spec: str) -> dict:
    """``"cuda -arch=sm_90"`` (the command-line form TVM users know) or a JSON dict -> TVM's dict form."""
    text = spec.strip()
    if text.startswith("{"):
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"tvm_target {spec!r} is not valid JSON: {e}") from e
    else:
        kind, *options = text.split()
        config = {"kind": kind}
        for option in options:
            m = re.fullmatch(r"-{1,2}([\w-]+)=(\S+)", option)
            if not m:
                raise UsageError(f"tvm_target {spec!r}: cannot read {option!r}; write options as -key=value, "
                                 "e.g. 'cuda -arch=sm_90'")
            config[m.group(1)] = int(m.group(2)) if m.group(2).isdigit() else m.group(2)
    if config.get("kind") not in ("cuda", "llvm"):
        raise UsageError(f"tvm_target {spec!r}: kind must be cuda or llvm, e.g. 'cuda -arch=sm_90' or 'llvm'")
    arch = config.get("arch")
    if config["kind"] == "cuda" and arch is not None and not re.fullmatch(r"sm_\d{2,3}[a-z]?", str(arch)):
        raise UsageError(f"tvm_target {spec!r}: arch {arch!r} is not a CUDA arch; one of {ARCH_HINT}")
    return config


def resolve_target(spec: str | None):
    """The TVM target for ``settings.tvm_target``: None is this machine's GPU when TVM sees one, else llvm."""
    import tvm

    if spec is None:
        config = {"kind": "cuda"} if gpu_here() else {"kind": "llvm"}
    else:
        config = parse_target(spec)
    if config["kind"] == "cuda" and "arch" not in config:
        if gpu_here():
            return tvm.target.Target.from_device(tvm.cuda())  # the GPU's arch and thread limits
        raise UsageError(f"tvm_target {spec!r}: TVM sees no GPU here to read the arch from; name it, "
                         f"e.g. 'cuda -arch=sm_90' ({ARCH_HINT})")
    if config["kind"] == "llvm":
        config.setdefault("num-cores", os.cpu_count() or 1)
    else:  # the static shared-memory limit of every CUDA arch; dynamic shared memory goes above it
        config.setdefault("max_shared_memory_per_block", 48 * 1024)
    return tvm.target.Target(config)


def _cuda_modules(module) -> list:
    found = [module] if module.kind == "cuda" else []
    for child in module.imports:
        found += _cuda_modules(child)
    return found


def cuda_source(executable) -> str:
    """The CUDA source of every kernel in a VM executable built for a CUDA target."""
    return "\n".join(m.inspect_source("") for m in _cuda_modules(executable.mod))


def nvcc_version() -> str | None:
    if shutil.which("nvcc") is None:
        return None
    out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"release ([\d.]+)", out)
    return m.group(1) if m else out.strip().splitlines()[-1]


def compile_cubin(source: str, target) -> bytes:
    """``source`` compiled by nvcc to a cubin for ``target``'s arch (TVM's own nvcc driver)."""
    from tvm.support import nvcc

    with target:
        return bytes(nvcc.compile_cuda(source, target_format="cubin", arch=str(target.attrs["arch"]), compiler="nvcc"))


class CudaBuild(Compiled):
    """A tvm build for a CUDA GPU, made where it cannot run: it saves, it does not run."""

    target = "tvm"
    run_here = False

    def __init__(self, executable, tvm_target, tuning: dict, why_not_run: str | None = None):
        self.executable, self.tvm_target, self.tuning = executable, tvm_target, tuning
        self.arch = str(tvm_target.attrs["arch"])
        self.why_not_run = why_not_run or "TVM sees no CUDA GPU here (tvm.cuda().exist is False)"
        self.source = cuda_source(executable)
        self.kernels = _KERNEL.findall(self.source)

    def __call__(self, *inputs):
        raise BuildOnlyError(
            f"this tvm build is for cuda {self.arch} and was built where it cannot run: {self.why_not_run}. "
            "Save it (jetvit_compile.targets.tvm_cuda.build_only writes it with its manifest) and run it with "
            "load_build(folder) on a machine with that GPU and a CUDA-enabled TVM")

    def save(self, folder: Path, cubin: bool | None = None) -> list[str]:
        """``model.so`` and ``model.cu``; ``model.<arch>.cubin`` too when ``cubin`` (None: when nvcc is here)."""
        with atomic_write(folder / "model.so") as tmp:
            os.unlink(tmp)  # export_library writes the file itself, by name
            self.executable.export_library(tmp)
        with atomic_write(folder / "model.cu") as tmp:
            Path(tmp).write_text(self.source)
        files = ["model.so", "model.cu"]
        if cubin or cubin is None and shutil.which("nvcc"):
            with atomic_write(folder / f"model.{self.arch}.cubin") as tmp:
                Path(tmp).write_bytes(compile_cubin(self.source, self.tvm_target))
            files.append(f"model.{self.arch}.cubin")
        return files


def versions() -> dict[str, str]:
    out = {}
    for dist in ("jetvit-compile", "torch", "apache-tvm", "apache-tvm-ffi"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    if (nvcc := nvcc_version()) is not None:
        out["nvcc"] = nvcc
    return out
