"""What a search returns: the layout, everything it scored, and what was measured on photos it never saw."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..distill.attention_transfer import TransferResult
from ..distill.end_to_end import DistillResult
from ..layout import Layout
from .beam import SearchResult


def quantized_original(scheme: str) -> str:
    """The key of the quantized original in an outcome's ``measured_ms`` / ``predicted_ms``."""
    return f"original, {scheme} linear layers"


COMPILED_ORIGINAL = "original, compiled"


def baseline_key(quantize: str | None) -> str:
    """The row every speedup is over: the original compiled as the layout is (same backend and lowering, so
    on onnxruntime with its attention kernel), and with ``quantize`` the original so quantized."""
    return quantized_original(quantize) if quantize else COMPILED_ORIGINAL


@dataclasses.dataclass
class SearchOutcome:
    layout: Layout
    result: SearchResult
    sensitivity: dict[str, list[float]]  # variant (all rungs but the top) -> [site i alone on it, the rest full]
    held_out: dict[str, float]  # layout text -> mean Pearson correlation on the held-out photos
    measured_ms: dict[str, float]  # "original" (the model as given), the layout and the baseline (baseline_key):
    # median ms on the backend, interleaved
    predicted_ms: dict[str, float | None]  # the layout's and the baseline's (the original as given: None)
    backend: str
    calibration: list[str]
    held_out_photos: list[str]
    notes: list[str]
    taps: list[str] = dataclasses.field(default_factory=list)  # what fidelity is judged on; empty: the first output
    quantize: str | None = None  # every layout ran with its linear layers so quantized (ONNX)
    validation: dict[str, float] = dataclasses.field(default_factory=dict)  # layout -> fidelity on validation photos
    validation_photos: list[str] = dataclasses.field(default_factory=list)
    transfer: TransferResult | None = None  # stage 1 (learned rungs): per site and rung, held-out block losses
    distilled: DistillResult | None = None  # stage 2 of the chosen layout: losses and the loss curve
    layout_path: Path | None = None
    report_path: Path | None = None

    @property
    def baseline(self) -> str:
        return baseline_key(self.quantize)

    @property
    def speedup(self) -> float:
        """Over the original compiled the same way (:func:`baseline_key`): the honest gain."""
        return self.measured_ms[self.baseline] / self.measured_ms[str(self.layout)]

    @property
    def speedup_over_file(self) -> float:
        """Over the model as given (an unoptimised file flatters a layout: shown, labelled so)."""
        return self.measured_ms["original"] / self.measured_ms[str(self.layout)]
