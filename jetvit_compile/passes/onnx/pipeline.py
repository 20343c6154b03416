"""Lowering an ONNX model by a layout: one ordered pipeline of passes, each returning what it changed.

    rewrite attention (to_window, to_linear)  ->  full attention as ONNX Runtime's kernel (to_ort_attention)
    ->  (the search only: the part from one site on, :mod:`.suffix`)  ->  linear layers in int8 (to_int8)

``OnnxLowering`` says which of the last two run: ``PORTABLE`` (plain ONNX, any runtime), ``ONNXRUNTIME`` (what
the onnxruntime target deploys), plus ``quantize``. The compile, the search's scoring and the latency
profiles all lower through :func:`lower`, so what is scored, priced and deployed is one model.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from ...layout import Layout
from ...sites import AttentionSite
from .quantize import check_scheme, quantize_linear_layers
from .rewrite import Spliced, rewrite_onnx
from .suffix import cut_model
from .weights_apart import serialize_weights_apart


@dataclasses.dataclass(frozen=True)
class OnnxLowering:
    ort_kernels: bool = False  # full attention (full sites, +full: heads) as com.microsoft.MultiHeadAttention
    quantize: str | None = None  # "int8": the linear layers' weights in int8 (ONNX Runtime's dynamic quantization)

    def __post_init__(self) -> None:
        check_scheme(self.quantize)

    @property
    def name(self) -> str:
        """Recorded in latency profiles: blocks measured under another lowering are measured again."""
        return "+".join(["ort-mha" if self.ort_kernels else "portable"] + ([self.quantize] if self.quantize else []))


PORTABLE = OnnxLowering()
ONNXRUNTIME = OnnxLowering(ort_kernels=True)


@dataclasses.dataclass(frozen=True, eq=False)
class SuffixCut:
    """Lower only what runs from site ``start`` on (None: all of it), the values computed before the cut read
    as inputs of ``dtypes``; ``fetch``: the values the caller reads. Every later cut's state becomes an output."""
    start: int | None
    fetch: tuple[str, ...]
    dtypes: dict[str, ir.DataType] = dataclasses.field(default_factory=dict)
    entries: tuple[str | None, ...] = ()  # each site's block entry (suffix.block_entries), found once per model


@dataclasses.dataclass
class Lowered:
    model: ir.Model  # before quantization (the float graph the blocks were spliced into)
    blob: bytes  # the serialized result of every pass (without ``weights``, when they were kept apart)
    counts: dict[str, int]  # {pass: sites or layers changed}, in pipeline order
    spliced: list[Spliced]  # what the rewrite put where (for the numerical check)
    states: dict[int, list[str]] = dataclasses.field(default_factory=dict)  # with a cut: {later cut: its values}
    weights: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # initializers not in ``blob``


def lower(model: ir.Model, layout: Layout | str, lowering: OnnxLowering = PORTABLE,
          sites: list[AttentionSite] | None = None, grid: tuple[int, int] | None = None,
          cut: SuffixCut | None = None, weights_apart: bool = False) -> Lowered:
    """Run the pipeline on ``model`` (changed in place; ``sites``: its sites, when already found).
    ``weights_apart``: for a session only (never a file), the large initializers stay out of the bytes, in
    ``Lowered.weights`` (not with int8, which rewrites them)."""
    layout = Layout.coerce(layout)
    model, counts, spliced = rewrite_onnx(model, layout, grid, lowering.ort_kernels, sites)
    if lowering.ort_kernels:
        counts["to_ort_attention"] = sum(1 for s in spliced if s.choice.kind == "full" or s.choice.full_heads)
    states = {}
    if cut is not None:  # the sites of a prepared copy (ViTModel.copy): a cut is found on the sites given
        if sites is None:
            raise ValueError("a cut needs the model's sites")
        states = cut_model(model, sites, cut.start, list(cut.fetch), cut.dtypes, cut.entries)
    weights = {}
    if weights_apart and not lowering.quantize:
        blob, weights = serialize_weights_apart(model)
    else:
        blob = ir.serde.serialize_model(model).SerializeToString()
    if lowering.quantize:
        blob, counts["to_int8"] = quantize_linear_layers(blob, lowering.quantize)
    return Lowered(model, blob, counts, spliced, states, weights)
