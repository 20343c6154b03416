"""What a search returns: the layout, everything it scored, and what was measured on photos it never saw."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..layout import Layout
from .beam import SearchResult


def quantized_original(scheme: str) -> str:
    """The key of the quantized original in an outcome's ``measured_ms`` / ``predicted_ms``."""
    return f"original, {scheme} linear layers"


@dataclasses.dataclass
class SearchOutcome:
    layout: Layout
    result: SearchResult
    sensitivity: dict[str, list[float]]  # variant (all rungs but the top) -> [site i alone on it, the rest full]
    held_out: dict[str, float]  # layout text -> mean Pearson correlation on the held-out photos
    measured_ms: dict[str, float]  # "original" and the layout: median ms on the backend, interleaved
    predicted_ms: dict[str, float | None]  # the original's is None when the profile priced quantized models
    backend: str
    calibration: list[str]
    held_out_photos: list[str]
    notes: list[str]
    taps: list[str] = dataclasses.field(default_factory=list)  # what fidelity is judged on; empty: the first output
    quantize: str | None = None  # every layout ran with its linear layers so quantized (ONNX)
    layout_path: Path | None = None
    report_path: Path | None = None

    @property
    def speedup(self) -> float:
        return self.measured_ms["original"] / self.measured_ms[str(self.layout)]
