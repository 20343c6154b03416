"""A torch.export program (in memory, or saved as ``.pt2``) behind the model interface; its rewrites run in
torch (the rewritten GraphModule: the same maths as the re-exported program, no re-export per layout)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils._pytree import tree_leaves

from .._files import atomic_write
from ..errors import UnsupportedModelError, UsageError
from ..layout import Layout
from ..passes.fx.find_attention import find_attention
from ..passes.fx.program import example_inputs, fresh_copy, rewrite_module, rewrite_program
from ..passes.taps import fx_tap_nodes, record_fx_taps
from .base import Rewritten, ViTModel, WholeRuns


def load_pt2(path: str | os.PathLike) -> torch.export.ExportedProgram:
    if not Path(path).is_file():
        raise UsageError(f"{path}: no such file")
    try:  # programs of Hugging Face models need transformers' output classes registered as pytree nodes
        import transformers.modeling_outputs  # noqa: F401
    except ImportError:
        pass
    try:
        return torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad archive
        raise UsageError(f"{path}: not a readable torch.export program ({type(e).__name__})") from None


def _first_tensor(out) -> torch.Tensor:
    return next(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))


class ProgramModel(ViTModel):
    kind = "torch.export program"
    default_backend = "torch"
    suffix = ".pt2"

    def __init__(self, program: torch.export.ExportedProgram, grid: tuple[int, int] | None = None,
                 path: str | os.PathLike | None = None):
        self.program, self.grid = program, grid
        self._unlifted = program.module()  # never run or changed: each rewrite starts from a fresh copy of it
        sites, refused = find_attention(fresh_copy(self._unlifted), grid)
        super().__init__(sites, refused, path)

    @property
    def input_shape(self) -> tuple[int, ...]:
        args = example_inputs(self.program)[0]
        if len(args) != 1:
            raise UnsupportedModelError(f"{self.label}: photos are fed as one image input; the program takes "
                                        f"{len(args)} inputs")
        return tuple(args[0].shape)

    @property
    def input_names(self) -> list[str]:
        user = torch.export.graph_signature.InputKind.USER_INPUT
        return [s.arg.name for s in self.program.graph_signature.input_specs if s.kind == user]

    def file_runner(self) -> Callable[[torch.Tensor], torch.Tensor]:
        module = self.program.module()

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return _first_tensor(module(x))
        return run

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return example_inputs(self.program)[0]

    def rewrite(self, layout: Layout | str, check: bool = True) -> Rewritten:
        self.require_sites()
        program, summary = rewrite_program(self.program, layout, self.grid)
        return Rewritten(program, summary)

    def save(self, rewritten: Rewritten, out: str | os.PathLike) -> Path:
        out = self.output_path(out)
        with atomic_write(out) as tmp:
            torch.export.save(rewritten.graph, tmp)
        return out

    def module(self, layout: Layout | None) -> torch.nn.Module:
        """The original, or its rewrite as a runnable GraphModule (new blocks as submodules)."""
        if layout is None:
            return self.program.module()
        return rewrite_module(self.program, layout, self.grid, fresh_copy(self._unlifted))[0]

    def evaluator(self, taps: Sequence[str] = (), quantize: str | None = None) -> "ProgramEvaluator":
        if quantize:
            raise UsageError("--quantize applies to ONNX files (ONNX Runtime's int8 kernels); export the program to "
                             "ONNX and search that")
        return ProgramEvaluator(self, list(taps))

    def compile(self, layout: Layout | str = "full", target: str = "auto", *, settings=None, output=None,
                quantize: str | None = None, inputs=None):
        from ..compiler.program import compile_program

        if quantize:
            raise UsageError("--quantize applies to ONNX files compiled for onnxruntime; export the program to ONNX "
                             "first")
        return compile_program(self, layout, target, inputs=inputs, settings=settings, output=output)

    def capture(self, images: list[torch.Tensor], folder: str | os.PathLike, sites: Sequence[int] | None = None):
        from ..distill.captures import capture_fx

        return capture_fx(self.program, images, folder, sites)

    def student(self, layout: Layout | str, taps: Sequence[str] = (), input_shapes: str | None = None, seed: int = 0):
        from ..distill.students import fx_student

        if input_shapes:
            raise UsageError("a torch.export program trains at the size it was exported at; export it at the size "
                             "to train at, or give an ONNX file and --train-shape")
        return fx_student(self.program, layout, taps, seed)

    def timed_runner(self, layout: Layout | None, backend: str, image: torch.Tensor,
                     quantize: str | None = None) -> Callable[[], object]:
        if backend == "torch":
            run = self.module(layout)
            return lambda: run(image)
        from ..targets import TARGETS, CompileSettings

        rewritten = self.program if layout is None else rewrite_program(self.program, layout, self.grid)[0]
        compiled = TARGETS[backend].compile(rewritten, (image,), CompileSettings())
        return lambda: compiled(image)


class ProgramEvaluator:
    def __init__(self, model: ProgramModel, taps: list[str]):
        self._model, self.taps = model, taps
        self._tap_nodes = fx_tap_nodes(model.program.module(), taps)
        model.input_size  # the search feeds one [1, 3, H, W] image: refused here otherwise

    def model(self, layout: Layout | None):
        return self._model.module(layout)

    def scorer(self, images: list[torch.Tensor], max_bytes: int) -> WholeRuns:
        """Every layout run whole (nothing reused between layouts yet for torch.export programs)."""
        return WholeRuns(self, images)

    def outputs(self, layout: Layout | None, images: list[torch.Tensor]) -> list:
        module = self.model(layout)
        if not self.taps:
            with torch.no_grad():
                return [_first_tensor(module(x)) for x in images]
        store = record_fx_taps(module, self._tap_nodes, self.taps)
        outs = []
        with torch.no_grad():
            for x in images:
                module(x)
                outs.append([store[str(i)] for i in range(len(self.taps))])
        return outs
