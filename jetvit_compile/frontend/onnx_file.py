"""An ONNX file behind the model interface: read safely (clear errors for bad files, no external data from
outside the model's folder), with ``--input-shape`` applied and its opset upgraded once; its sites are found
once and carried to every copy a rewrite works on. Rewrites run in ONNX Runtime, lowered as the onnxruntime
target lowers them (:mod:`..passes.onnx.pipeline`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import torch
from google.protobuf.message import DecodeError

from .._files import atomic_write
from .._onnxruntime import cpu_session, run_owned
from ..errors import UnsupportedModelError, UsageError
from ..images import load_image, photo_paths
from ..layout import Layout
from ..passes.onnx import find_attention, set_input_shapes
from ..passes.onnx.pipeline import ONNXRUNTIME, PORTABLE, Lowered, OnnxLowering, lower
from ..passes.onnx.rewrite import rebind_sites, upgrade_opset
from ..passes.onnx.verify import verify
from ..passes.taps import check_onnx_taps_kept, expose_onnx_taps, inside_replaced_attention
from .base import Rewritten, ViTModel, WholeRuns


def load_model(path: str | os.PathLike) -> ir.Model:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path}: not a file (give the path of an .onnx model)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as e:
        raise UsageError(f"{path}: not a readable ONNX model ({type(e).__name__}); is it truncated or corrupt?") from None
    if not proto.graph.node:
        raise UsageError(f"{path}: the ONNX graph is empty; is the file truncated or corrupt?")
    _check_external_data(proto, path)
    try:
        onnx.load_external_data_for_model(proto, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        raise UsageError(f"{path}: cannot read its external data ({e})") from None
    return ir.serde.deserialize_model(proto)


def _check_external_data(proto: onnx.ModelProto, path: Path) -> None:
    folder = path.parent.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if os.path.isabs(location) or folder not in target.parents:
            raise UsageError(f"{path}: tensor {tensor.name!r} points its external data at {location!r}, outside "
                             "the model's folder; refusing to read it (move the data file beside the model)")
        if not target.is_file():
            raise UsageError(f"{path}: external data file {location!r} of tensor {tensor.name!r} is missing")


def save_model(model: ir.Model, out: str | os.PathLike) -> Path:
    """Write ``model`` atomically (temp file + rename), weights inline."""
    out = Path(out)
    with atomic_write(out) as tmp:
        try:
            ir.save(model, tmp)
        except ValueError as e:  # protobuf refuses > 2 GB
            raise UsageError(f"cannot write {out}: {e}") from None
    return out


def read_onnx(path: str | os.PathLike, input_shapes: str | dict | None = None) -> ir.Model:
    """The ONNX file at ``path`` with ``input_shapes`` (``NAME:1x3xHxW``) applied."""
    model = load_model(path)
    if input_shapes:
        set_input_shapes(model, input_shapes)
    return model


def concrete_shape(value: ir.Value) -> tuple[int, ...]:
    """The input's shape, a symbolic batch (first) dim read as 1; other symbolic dims are refused."""
    dims = tuple(value.shape or ())
    if dims and not isinstance(dims[0], int):
        dims = (1, *dims[1:])
    if not dims or not all(isinstance(d, int) for d in dims):
        raise UsageError(f"input {value.name!r} has shape {value.shape}; give a concrete one with "
                         f"--input-shape {value.name}:1x3xHxW")
    return dims


def photo_array(path, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A preprocessed photo as an ``[B, 3, H, W]`` array of ``shape`` and ``dtype`` (the batch repeats it)."""
    return np.broadcast_to(load_image(path, shape[2:]).numpy(), shape).astype(dtype)


def input_feed(model: ir.Model, seed: int = 0) -> dict[str, np.ndarray]:
    """One input per graph input: a real photo for ``[1, 3, H, W]`` float images, else seeded noise."""
    feed = {}
    rng = np.random.default_rng(seed)
    for value in model.graph.inputs:
        if value.name in model.graph.initializers:
            continue
        shape = concrete_shape(value)
        if len(shape) == 4 and shape[1] == 3:
            feed[value.name] = photo_array(photo_paths(limit=1)[0], shape, value.dtype.numpy())
        else:
            feed[value.name] = rng.standard_normal(shape).astype(value.dtype.numpy())
    return feed


def serialize(model: ir.Model) -> bytes:
    return ir.serde.serialize_model(model).SerializeToString()


class OnnxModel(ViTModel):
    kind = "ONNX model"
    default_backend = "onnxruntime"
    suffix = ".onnx"

    def __init__(self, source: str | os.PathLike | ir.Model, input_shapes: str | dict | None = None,
                 grid: tuple[int, int] | None = None):
        path = None if isinstance(source, ir.Model) else source
        model = source if isinstance(source, ir.Model) else read_onnx(source, input_shapes)
        if input_shapes and isinstance(source, ir.Model):
            set_input_shapes(model, input_shapes)
        self.original = model  # as read, with its input shapes set
        self.prepared = upgrade_opset(model)  # at the replacement blocks' opset (the same model when it is)
        self.grid = grid
        sites, refused = find_attention(self.prepared, grid)
        super().__init__(sites, refused, path)
        self._original_blob: bytes | None = None

    def copy(self) -> tuple[ir.Model, list]:
        """A fresh copy of the prepared model (its graph; the weights are shared, never changed in place) and its
        sites rebound to it (nothing found again)."""
        model = self.prepared.clone()
        return model, rebind_sites(self.require_sites(), model)

    @property
    def image_inputs(self) -> list[ir.Value]:
        return [v for v in self.original.graph.inputs if v.name not in self.original.graph.initializers]

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.image_inputs]

    @property
    def input_shape(self) -> tuple[int, ...]:
        inputs = self.image_inputs
        if len(inputs) != 1:
            raise UnsupportedModelError(f"{self.label}: photos are fed as one image input; the model has "
                                        f"{[v.name for v in inputs]}")
        return concrete_shape(inputs[0])

    def feed(self, seed: int = 0) -> dict[str, np.ndarray]:
        """One input per graph input (a real photo for the image): what checks run on."""
        return input_feed(self.original, seed)

    def original_session(self):
        """The model as read (no upgrade, no rewrite) in an ONNX Runtime CPU session."""
        if self._original_blob is None:
            self._original_blob = serialize(self.original)
        return cpu_session(self._original_blob)

    def file_runner(self) -> Callable[[torch.Tensor], torch.Tensor]:
        session = self.original_session()
        name, dtype = self.image_inputs[0].name, self.image_inputs[0].dtype.numpy()
        return lambda x: torch.from_numpy(run_owned(session, None, {name: x.numpy().astype(dtype)})[0])

    def lower(self, layout: Layout | str, lowering: OnnxLowering = PORTABLE) -> Lowered:
        model, sites = self.copy()
        return lower(model, layout, lowering, sites)

    def rewrite(self, layout: Layout | str, check: bool = True, lowering: OnnxLowering = PORTABLE) -> Rewritten:
        """The rewrite by ``layout`` (``lowering``: e.g. as the onnxruntime target lowers it; before int8)."""
        layout = Layout.coerce(layout)
        lowered = self.lower(layout, lowering)
        errors = (verify(lowered.model, lowered.spliced, input_feed(lowered.model), layout.site_params)
                  if check and lowered.spliced else [])
        return Rewritten(lowered.model, lowered.counts, errors)

    def save(self, rewritten: Rewritten, out: str | os.PathLike) -> Path:
        return save_model(rewritten.graph, self.output_path(out))

    def evaluator(self, taps: Sequence[str] = (), quantize: str | None = None) -> "OnnxEvaluator":
        return OnnxEvaluator(self, list(taps), OnnxLowering(ort_kernels=True, quantize=quantize))

    def compile(self, layout: Layout | str = "full", target: str = "auto", *, settings=None, output=None,
                quantize: str | None = None, inputs=None):
        from ..compiler.onnx_file import compile_onnx_model

        if inputs is not None:
            raise UsageError("an ONNX model is compiled at its own input shape; give --input-shape, not inputs")
        return compile_onnx_model(self, layout, target, settings=settings, output=output, quantize=quantize)

    def capture(self, images: list[torch.Tensor], folder: str | os.PathLike, sites: Sequence[int] | None = None):
        from ..distill.captures import capture_onnx

        return capture_onnx(self.copy()[0], images, folder, sites)

    def student(self, layout: Layout | str, taps: Sequence[str] = (), input_shapes: str | None = None, seed: int = 0):
        from ..distill.students import onnx_student

        return onnx_student(self.original, layout, taps, input_shapes, seed)

    def timed_runner(self, layout: Layout | None, backend: str, image: torch.Tensor,
                     quantize: str | None = None) -> Callable[[], object]:
        if backend != "onnxruntime":
            raise UsageError(f"an ONNX file is timed on onnxruntime; --backend {backend} needs a torch.export program")
        run = self.evaluator(quantize=quantize).model(layout)
        return lambda: run(image)


class OnnxEvaluator:
    """The model on ONNX Runtime (CPU), every rewrite lowered by ``lowering``; the original (layout None) as
    it is. Taps are exposed once, on the prepared model every rewrite copies."""

    def __init__(self, model: OnnxModel, taps: list[str], lowering: OnnxLowering = ONNXRUNTIME):
        model.input_size  # one [1, 3, H, W] image input, or refused here
        self.taps, self.lowering = taps, lowering
        self.input_name, self.dtype = model.image_inputs[0].name, model.image_inputs[0].dtype.numpy()
        self.tapped, self._fetch = model, None  # no taps: the first output
        if taps:
            clone = model.original.clone()
            self._fetch = expose_onnx_taps(clone, taps)
            self.tapped = OnnxModel(clone, grid=model.grid)
            if len(self.tapped.sites) != len(model.sites):  # a tap read inside attention hides its site
                raise inside_replaced_attention(taps)

    @property
    def fetch_names(self) -> list[str]:
        """The values judged: the taps', or the first output's."""
        return self._fetch or [self.tapped.prepared.graph.outputs[0].name]

    def scorer(self, images: list[torch.Tensor], max_bytes: int) -> "PrefixReuse | WholeRuns":
        """``outputs(layout, images)`` for many layouts, each run from its first site that differs from a layout
        already run (:mod:`.onnx_prefix_reuse`; states kept within ``max_bytes``)."""
        from .onnx_prefix_reuse import PrefixReuse

        return PrefixReuse(self, images, max_bytes) if max_bytes > 0 else WholeRuns(self, images)

    def _session(self, layout: Layout | None, weights_apart: bool = False):
        """``weights_apart`` for scoring: the session reads the original's weights in place (what it computes is
        the same; sessions that are timed get the whole model, as a deployed one is)."""
        if layout is None:
            return self.tapped.original_session()
        model, sites = self.tapped.copy()
        lowered = lower(model, layout, self.lowering, sites, weights_apart=weights_apart)
        check_onnx_taps_kept(lowered.model, self.taps, self._fetch or [])
        return cpu_session(lowered.blob, weights=lowered.weights)

    def _feed(self, x: torch.Tensor) -> dict:
        return {self.input_name: x.numpy().astype(self.dtype)}

    def model(self, layout: Layout | None):
        session = self._session(layout)
        return lambda x: torch.from_numpy(run_owned(session, None, self._feed(x))[0])

    def outputs(self, layout: Layout | None, images: list[torch.Tensor]) -> list:
        session = self._session(layout, weights_apart=True)
        if not self.taps:
            return [torch.from_numpy(run_owned(session, None, self._feed(x))[0]) for x in images]
        return [[torch.from_numpy(t) for t in run_owned(session, self._fetch, self._feed(x))] for x in images]
