"""Compile a torch.export program: rewrite it, lower it on a torch-side target (TensorRT, TVM, ONNX Runtime
via the exporter, torch.compile, eager), check it against the rewritten graph, save it."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils._pytree import tree_leaves

from ..errors import UsageError
from ..layout import Layout
from ..targets import AUTO_ORDER, TARGETS, CompileSettings, Compiled
from .artifact import CompileResult, check_output_folder, save_artifact
from .fallback import try_targets


def _max_abs_diff(a, b) -> float:
    la, lb = tree_leaves(a), tree_leaves(b)
    tensors = [(x, y) for x, y in zip(la, lb) if isinstance(x, torch.Tensor)]
    return max(float((x.detach().cpu().float() - y.detach().cpu().float()).abs().max()) for x, y in tensors)


def target_candidates(target: str) -> list[str]:
    if target == "auto":
        return list(AUTO_ORDER)
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; choose auto or one of: {', '.join(AUTO_ORDER)}")
    return [target]


def target_available(name: str, target: str = "auto") -> tuple[bool, str]:
    """Whether ``name`` can build here and, under ``target="auto"``, whether auto picks it."""
    ok, why = TARGETS[name].available()
    if ok and target == "auto" and not TARGETS[name].auto:
        return False, "not chosen by auto (untuned kernels are slower than ONNX Runtime); ask for it by name"
    return ok, why


def auto_target(target: str = "auto") -> str | None:
    """The target a program's compile would try first here: ``target`` itself when named, else auto's first pick."""
    return next((n for n in target_candidates(target) if target_available(n, target)[0]), None)


def _gpu_build_without_gpu(settings: CompileSettings) -> bool:
    if not settings.tvm_target or not TARGETS["tvm"].available()[0]:
        return False
    from ..targets.tvm_cuda import gpu_here, parse_target

    return parse_target(settings.tvm_target)["kind"] == "cuda" and not gpu_here()


def _check_inputs(inputs, expected: tuple[torch.Tensor, ...]) -> None:
    """``inputs`` as the program was exported to take them (a tuple of tensors of its shapes and dtypes)."""
    want = ", ".join(f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in expected)
    if not isinstance(inputs, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise UsageError(f"inputs must be a tuple of tensors ({want}), got {type(inputs).__name__}")
    got = [(tuple(t.shape), t.dtype) for t in inputs]
    if len(inputs) != len(expected) or got != [(tuple(t.shape), t.dtype) for t in expected]:
        have = ", ".join(f"{list(s)} {str(d).removeprefix('torch.')}" for s, d in got)
        raise UsageError(f"inputs are {have or 'empty'}; the program was exported for {want}: give inputs of "
                         "that shape, or export the program at the size to compile")


def compile_program(model, layout: Layout | str = "full", target: str = "auto",
                    inputs: tuple[torch.Tensor, ...] | None = None, settings: CompileSettings | None = None,
                    output: str | os.PathLike | None = None) -> CompileResult:
    """``model`` (a front-end ProgramModel) rewritten by ``layout``, lowered on ``target`` (``"auto"``: the first
    that works here), checked against the rewritten graph, saved into the folder ``output`` when given."""
    candidates = target_candidates(target)
    if inputs is not None:
        _check_inputs(inputs, model.example_inputs())
    if output is not None:
        check_output_folder(output, model.path)
    settings = settings or CompileSettings()
    layout = Layout.coerce(layout)
    if target == "tvm" and output is not None and _gpu_build_without_gpu(settings):  # saved, not run
        from .tvm_build_only import build_only

        built = build_only(model.program, layout, output=output, tvm_target=settings.tvm_target, settings=settings)
        return CompileResult("tvm", built.compiled, built.summary, [], float("nan"), manifest=built.manifest)
    rewritten = model.rewrite(layout)
    program = rewritten.graph
    inputs = inputs if inputs is not None else model.example_inputs()
    with torch.no_grad():
        reference = program.module()(*inputs)

    def build(name: str) -> tuple[Compiled, float]:
        compiled = TARGETS[name].compile(program, inputs, settings)
        with torch.no_grad():
            return compiled, _max_abs_diff(compiled(*inputs), reference)

    name, compiled, err, skipped = try_targets(candidates, target, lambda n: target_available(n, target), build,
                                               "the rewritten graph")
    result = CompileResult(name, compiled, rewritten.summary, skipped, err)
    if output is not None:
        result.manifest = save_artifact(result, Path(output), layout, inputs)
    return result
