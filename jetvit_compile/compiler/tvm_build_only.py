"""Build a model for a GPU that is not here: rewrite it, build it with TVM for a CUDA arch (e.g. sm_90), and
save the library, its CUDA source (and an nvcc cubin) with a manifest that says it was built, not run.
Running it (:func:`load_build`) is for a machine with that GPU and a CUDA-enabled TVM."""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

from .._files import atomic_write
from ..errors import UsageError
from ..layout import Layout
from ..passes.fx.program import rewrite_program
from ..targets.base import CompileSettings, Compiled
from ..targets.tvm_cuda import BuildOnlyError, CudaBuild, gpu_here, parse_target, resolve_target, versions
from ..targets.tvm_target import TVM, _TvmCompiled


@dataclasses.dataclass
class BuildOnlyResult:
    compiled: CudaBuild
    summary: dict[str, int]
    manifest: dict
    folder: Path


def build_only(model, layout="full", *, output: str | os.PathLike, tvm_target: str = "cuda -arch=sm_90",
               settings: CompileSettings | None = None, cubin: bool | None = None) -> BuildOnlyResult:
    """Rewrite ``model`` (an ExportedProgram) by ``layout``, build it for ``tvm_target`` without running it,
    and save the artifact and its manifest into the folder ``output``. ``cubin``: also compile the kernels with
    nvcc for the target's arch (None: when nvcc is on the PATH)."""
    if parse_target(tvm_target)["kind"] != "cuda":
        raise UsageError(f"build_only builds for a GPU; got tvm_target {tvm_target!r}, e.g. 'cuda -arch=sm_90'")
    settings = dataclasses.replace(settings or CompileSettings(), tvm_target=tvm_target)
    start = time.perf_counter()
    program, summary = rewrite_program(model, layout)
    rewritten = time.perf_counter()
    inputs = tuple(program.example_inputs[0]) if program.example_inputs else ()
    built = TVM().compile(program, inputs, settings)
    if not isinstance(built, CudaBuild):  # a GPU is here: the build could run, but this call only builds
        built = CudaBuild(built.executable, resolve_target(tvm_target), built.tuning,
                          "build_only does not run the model; jetvit_compile.compile runs and checks it")
    compiled_at = time.perf_counter()
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"output {folder} exists and is not a folder; build_only writes a folder")
    folder.mkdir(parents=True, exist_ok=True)
    files = built.save(folder, cubin)
    manifest = {
        "target": "tvm",
        "built_for": {"kind": "cuda", "arch": built.arch, "tvm_target": str(built.tvm_target)},
        "ran": False,
        "verified": False,
        "why_not_run": built.why_not_run,
        "run_on": (f"a machine with an NVIDIA {built.arch} GPU and a CUDA-enabled TVM "
                   f"{versions().get('apache-tvm', '')}: jetvit_compile.compiler.tvm_build_only.load_build(folder)"),
        "files": files,
        "file_bytes": {name: (folder / name).stat().st_size for name in files},
        "cuda": {"kernels": len(built.kernels), "source_bytes": len(built.source.encode()),
                 "cubin": next((f for f in files if f.endswith(".cubin")), None)},
        "layout": str(Layout.coerce(layout)),
        "passes": summary,
        "input_shapes": [list(x.shape) for x in inputs],
        "input_dtypes": [str(x.dtype).removeprefix("torch.") for x in inputs],
        "versions": versions(),
        "built_on": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, no GPU run",
        "tuning": built.tuning,
        "seconds": {"rewrite": round(rewritten - start, 2), "build": round(compiled_at - rewritten, 2),
                    "save": round(time.perf_counter() - compiled_at, 2)},
    }
    with atomic_write(folder / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n")
    return BuildOnlyResult(built, summary, manifest, folder)


def load_build(folder: str | os.PathLike) -> Compiled:
    """The library :func:`build_only` saved in ``folder``, ready to run on this machine's GPU.
    Raises :class:`BuildOnlyError` where TVM sees no GPU."""
    import tvm

    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    arch = manifest["built_for"]["arch"]
    if not gpu_here():
        raise BuildOnlyError(f"{folder} holds a tvm build for cuda {arch}; TVM sees no CUDA GPU here "
                             "(tvm.cuda().exist is False): run it on a machine with that GPU and a CUDA-enabled TVM")
    return _TvmCompiled(tvm.runtime.load_module(str(folder / "model.so")), tvm.cuda(), manifest["tuning"])
