"""Run one model, rewritten by any layout, on images: what the search scores, for either IR.

``TorchEvaluator`` holds a torch.export program and runs its rewrites in torch; ``OnnxEvaluator`` holds an
ONNX file and runs its rewrites in ONNX Runtime (CPU), lowered as the onnxruntime target lowers them (and,
with ``quantize``, with their linear layers quantized as that target's ``--quantize`` does). Both give, per
image, the model's first output, or the tensors named as taps (:mod:`.taps`: the features a task head
reads), so fidelity is judged on the real output or on what the head sees; both know the model's sites and
input size.
"""
from __future__ import annotations

import os

import torch
from torch.utils._pytree import tree_leaves

from ..errors import UnsupportedModelError, UsageError
from ..layout import Layout
from ..sites import AttentionSite
from .taps import check_onnx_taps_kept, expose_onnx_taps, fx_tap_nodes, inside_replaced_attention, record_fx_taps


def _first_tensor(out) -> torch.Tensor:
    return next(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))


def _image_size(shape: tuple, where: str) -> tuple[int, int]:
    if len(shape) != 4 or shape[1] != 3 or not all(isinstance(d, int) for d in shape[2:]):
        raise UnsupportedModelError(f"{where}: the search feeds photos as [1, 3, H, W]; the model's input is {shape}"
                                    " (give a concrete size with --input-shape NAME:1x3xHxW)")
    return int(shape[2]), int(shape[3])


class TorchEvaluator:
    backend = "torch"

    def __init__(self, program: torch.export.ExportedProgram, taps: list[str] | None = None):
        from ..passes.fx.program import example_inputs, sites_of

        self.program = program
        module = program.module()
        self.sites: list[AttentionSite] = sites_of(module)
        self.taps = list(taps or [])
        self._tap_nodes = fx_tap_nodes(module, self.taps)
        args = example_inputs(program)[0]
        if len(args) != 1:
            raise UnsupportedModelError(f"the search feeds one image input; this program takes {len(args)} inputs")
        self.input_size = _image_size(tuple(args[0].shape), "the program")

    def model(self, layout: Layout | None):
        """The original, or its rewrite as a GraphModule: the same maths as the re-exported program, and
        no re-export per layout scored."""
        from ..passes.fx.program import rewrite_module

        return self.program.module() if layout is None else rewrite_module(self.program, layout)[0]

    def outputs(self, layout: Layout | None, images: list[torch.Tensor]) -> list:
        """``layout`` None: the original. Each image is ``[1, 3, H, W]``. Per image, the first output, or
        the list of the taps' values."""
        model = self.model(layout)
        if not self.taps:
            with torch.no_grad():
                return [_first_tensor(model(x)) for x in images]
        store = record_fx_taps(model, self._tap_nodes, self.taps)
        outs = []
        with torch.no_grad():
            for x in images:
                model(x)
                outs.append([store[str(i)] for i in range(len(self.taps))])
        return outs


class OnnxEvaluator:
    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, input_shapes: str | None = None, taps: list[str] | None = None,
                 quantize: str | None = None):
        import onnx_ir as ir

        from ..onnx_pipeline import prepare
        from ..passes.onnx.quantize import check_scheme
        from ..passes.onnx.rewrite import sites_of

        model = prepare(path, input_shapes)
        inputs = [v for v in model.graph.inputs if v.name not in model.graph.initializers]
        if len(inputs) != 1:
            raise UnsupportedModelError(f"{path}: the search feeds one image input; the model has "
                                        f"{[v.name for v in inputs]}")
        dims = tuple(inputs[0].shape or ())
        dims = (1, *dims[1:]) if dims and not isinstance(dims[0], int) else dims  # a symbolic batch runs as 1
        self.input_size = _image_size(dims, str(path))
        self.input_name, self.dtype = inputs[0].name, inputs[0].dtype.numpy()
        self.sites: list[AttentionSite] = sites_of(model)
        self.taps = list(taps or [])
        check_scheme(quantize)
        self.quantize = quantize  # applies to every rewrite; the original (layout None) stays as it is
        self._fetch = expose_onnx_taps(model, self.taps) if self.taps else None  # None: the first output
        if self.taps and len(sites_of(model)) != len(self.sites):  # a tap read inside attention hides its site
            raise inside_replaced_attention(self.taps)
        self._blob = ir.serde.serialize_model(model).SerializeToString()  # each rewrite starts from a copy

    def _session(self, layout: Layout | None):
        import onnx
        import onnx_ir as ir
        import onnxruntime as ort

        from ..passes.onnx.quantize import quantize_linear_layers
        from ..passes.onnx.rewrite import rewrite_onnx

        blob = self._blob
        if layout is not None:
            model = ir.serde.deserialize_model(onnx.ModelProto.FromString(self._blob))
            rewritten = rewrite_onnx(model, layout, ort_kernels=True)[0]
            check_onnx_taps_kept(rewritten, self.taps, self._fetch or [])
            blob = ir.serde.serialize_model(rewritten).SerializeToString()
            if self.quantize:
                blob = quantize_linear_layers(blob, self.quantize)[0]
        return ort.InferenceSession(blob, providers=["CPUExecutionProvider"])

    def _feed(self, x: torch.Tensor) -> dict:
        return {self.input_name: x.numpy().astype(self.dtype)}

    def model(self, layout: Layout | None):
        session = self._session(layout)
        return lambda x: torch.from_numpy(session.run(None, self._feed(x))[0])

    def outputs(self, layout: Layout | None, images: list[torch.Tensor]) -> list:
        """Per image, the first output, or the list of the taps' values."""
        if not self.taps:
            run = self.model(layout)
            return [run(x) for x in images]
        session = self._session(layout)
        return [[torch.from_numpy(t) for t in session.run(self._fetch, self._feed(x))] for x in images]


def evaluator_for(model, input_shapes: str | None = None, taps: list[str] | None = None,
                  quantize: str | None = None):
    """The evaluator of an ExportedProgram, a ``.pt2`` file or an ONNX file, judging ``taps`` (None: the
    first output), with every rewrite's linear layers quantized by ``quantize`` (ONNX files only)."""
    from ..model_files import is_pt2, load_pt2

    program = isinstance(model, torch.export.ExportedProgram) or (isinstance(model, (str, os.PathLike)) and is_pt2(model))
    if quantize and program:
        raise UsageError("--quantize applies to ONNX files (ONNX Runtime's int8 kernels); export the program to "
                         "ONNX and search that")
    if isinstance(model, torch.export.ExportedProgram):
        if input_shapes:
            raise UsageError("--input-shape applies to ONNX files; export the torch program at the size you need")
        return TorchEvaluator(model, taps)
    if isinstance(model, (str, os.PathLike)):
        if is_pt2(model):
            if input_shapes:
                raise UsageError("--input-shape applies to ONNX files; export the torch program at the size you need")
            return TorchEvaluator(load_pt2(model), taps)
        return OnnxEvaluator(model, input_shapes, taps, quantize)
    raise UsageError(f"the search takes a torch.export.ExportedProgram or a .pt2 / .onnx file, got {type(model).__name__}")
