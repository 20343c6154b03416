"""Post-Training Attention Search end to end: photos -> split -> reference outputs -> device profile ->
per-site sensitivity -> beam search -> held-out check -> layout JSON (+ report).

Fidelity is the model's real output (its first output) on calibration photos while searching, and on
held-out photos, never seen by the search, for the result. Latency is the device profile's cost model for
the backend the model will be deployed on; the result's speedup is then measured, not predicted.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .._files import check_output_path
from ..attention.window import tiling_window
from ..errors import UsageError
from ..frontend import ViTModel, open_model
from ..images import images_in
from ..layout import FULL, Choice, Layout, parse_choice
from ..measure.fidelity import compare
from ..measure.timing import interleaved
from ..passes.checks import check_choice
from ..profiles.cost_model import base_from_measurement, block_times, predict, settle_entries, settled_base
from ..profiles.measure import profile_sites, profile_to_file
from ..profiles.profile import Profile, default_profile_path, site_entry_key
from .. import calibration
from .beam import beam_search, check_constraints, meets_constraints
from .head_trim import trim_full_heads, with_trimmed_heads
from .learned_stages import learned_rungs, stage1, stage2, with_params
from .outcome import SearchOutcome, baseline_key
from .report import write_report
from .settings import SearchSettings, settings_from
from ..progress import progress_bar

# cheapest first; window with pooled global keys is the variant that keeps this model's global decisions;
# reading each window's most attended cells token by token (route) and the tokens the whole image attends
# to most (global) keep more of them, for less than finer cells do (README, "Attention search: what it
# reaches"); linear:jetvit needs attention transfer and is opt-in.
DEFAULT_POOL = 4
DEFAULT_RUNGS = ("", "+route:8", "+route:8+global:128", "+route:32+global:128")  # after window:W+pool:4; then full
DEFAULT_RUNG_SIZES = ((0, 0), (8, 0), (8, 128), (32, 128))  # (routed cells, global tokens) each rung reads
# On a grid with room for them (no more clusters than pooled cells), the far field read through key clusters
# takes the place of the two middle rungs: at 1036 px, everywhere on 24 held-out photos, cluster:128 kept
# 0.963 at 1.77x over the compiled original against 0.952 (route:8, search_1036.md) and 0.970 at 1.59x
# (route:8+global:128), and cluster:256 0.972 (docs/results.md, 2026-12-04).
CLUSTER_RUNGS = (128, 256)


def default_variants(grid: tuple[int, int] | None) -> list[str]:
    """The default ladder, with W the window that tiles ``grid`` with the least padding
    (attention.tiling_window: a 37x37 grid, 518 px: 19; 74x74, 1036 px: 15; no grid known: 14)."""
    w = tiling_window(grid) if grid else 14
    ladder = [f"window:{w}+pool:{DEFAULT_POOL}{rung}" for rung in DEFAULT_RUNGS]
    if grid:  # a small grid has fewer pooled cells and tokens than a rung reads: those rungs cannot run there
        cells = -(-grid[0] // DEFAULT_POOL) * -(-grid[1] // DEFAULT_POOL)
        ladder = [v for v, (route, tokens) in zip(ladder, DEFAULT_RUNG_SIZES)
                  if route <= cells and tokens <= grid[0] * grid[1]]
        if len(ladder) == len(DEFAULT_RUNGS) and all(n <= cells for n in CLUSTER_RUNGS):
            ladder = [ladder[0], *(f"window:{w}+cluster:{n}" for n in CLUSTER_RUNGS), ladder[-1]]
    return ladder + ["full"]


def _ladder(variants: Sequence[str | Choice], sites) -> list[Choice]:
    ladder = [v if isinstance(v, Choice) else parse_choice(v) for v in variants]
    if len(set(ladder)) != len(ladder) or len(ladder) < 2:
        raise UsageError(f"--variants needs at least two different choices, cheapest first; got {list(map(str, ladder))}")
    for c in ladder:
        bad = {check_choice(s, c, {}) for s in sites} - {None}
        if bad:
            raise UsageError(f"variant {c} cannot run on this model: {'; '.join(sorted(bad))}")
    return ladder


def _profile(sites, ladder, backend: str, path, force: bool, progress: bool) -> Profile:
    """This device's profile, extended with whatever the ladder needs; with ``force``, the profile at
    ``path`` as it is, even from another device (e.g. an edge board's): nothing is measured into it."""
    variants = list(dict.fromkeys([*ladder, FULL]))
    if force and path is not None:
        profile = Profile.load(path, force=True, backend=backend)
        block_times(profile, sites, [FULL] * len(sites))  # a missing entry is a UsageError naming it
        for c in variants:
            block_times(profile, sites, [c] * len(sites))
        return profile
    profile, target = profile_to_file(sites, backend, path, force=False, variants=variants, progress=progress)
    settle_entries(profile, [site_entry_key(s, c) for s in sites for c in variants], _remeasure(profile, sites, target))
    return profile


def _remeasure(profile: Profile, sites, target):
    """``remeasure(keys)``: those entries of ``profile`` measured again at ``sites``, and the file updated."""
    def remeasure(keys: list[str]) -> None:
        variants = {k.split("/", 1)[0]: parse_choice(k.split("/", 1)[0]) for k in keys}
        for k in keys:
            profile.entries.pop(k, None)
        profile_sites(sites, list(variants.values()), profile.backend, profile=profile, progress=False)
        profile.save(target)
    return remeasure


def _cost_notes(ladder: list[Choice], profile: Profile, sites) -> list[str]:
    """Where this device's profile disagrees with the ladder's order (cheapest first): a variant that
    costs as much as full attention or more can only win where it keeps more fidelity, which it does not."""
    full_ms = sum(block_times(profile, sites, [FULL] * len(sites)))
    notes = []
    for c in ladder:
        ms = sum(block_times(profile, sites, [c] * len(sites)))
        if c != FULL and ms >= full_ms:
            notes.append(f"note: on this device and backend {c} is not faster than full attention ({ms:.1f} vs "
                         f"{full_ms:.1f} ms of attention per image); at this input size the search can gain little")
    return notes


def _split(paths: list[Path], s: SearchSettings) -> tuple[list[Path], list[Path], list[Path]]:
    """(calibration, validation, held-out) photos: the held-out side as ``calibration.split`` cuts it whatever
    the counts; the validation photos follow the calibration photos on the other side."""
    want = None if s.max_calibration is None else s.max_calibration + s.validation
    side, held = calibration.split(paths, s.held_out, s.seed, want, s.max_held_out)
    n = s.max_calibration if s.max_calibration is not None else max(calibration.MIN_PER_SIDE, len(side) - s.validation)
    return side[:n], side[n:n + s.validation], held


def _better(a: tuple[float, float], b: tuple[float, float], min_fidelity: float | None, budget_ms: float | None) -> bool:
    """Whether layout ``a`` (fidelity, predicted ms) is a better find than ``b`` for the target: among those that
    meet it the cheaper (fidelity target) or the more faithful (budget), else the one closer to it."""
    meets_a, meets_b = (meets_constraints(f, ms, min_fidelity, budget_ms) for f, ms in (a, b))
    if meets_a != meets_b:
        return meets_a
    if min_fidelity is not None and meets_a:
        return a[1] < b[1]
    return a[0] > b[0]


def held_out_note(min_fidelity: float | None, calibration: float, held_out: float, n_calibration: int) -> str | None:
    """A warning when the layout met the target on the calibration photos but not on the held-out ones."""
    if min_fidelity is None or calibration < min_fidelity or held_out >= min_fidelity:
        return None
    return (f"note: the layout keeps {calibration:.4f} on the {n_calibration} calibration photos but {held_out:.4f} "
            f"on the held-out photos, under the {min_fidelity} target: raise --min-fidelity by the gap "
            f"(about {min(1.0, 2 * min_fidelity - held_out):.3f}) or search on more calibration photos")


def search(
    model,
    calib: str | os.PathLike,
    settings: SearchSettings | None = None,
    *,
    input_shapes: str | None = None,
    output: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    **overrides,
) -> SearchOutcome:
    """Search a per-site attention layout for ``model`` (a ViTModel, ExportedProgram, .pt2 or .onnx path) on
    the photos in ``calib``, as ``settings`` (:class:`.settings.SearchSettings`, with keyword ``overrides`` of
    its fields) say. ``input_shapes`` (``NAME:1x3xHxW``) applies when ``model`` is an ONNX file path.

    Writes the layout JSON to ``output`` and a Markdown report into the folder ``report`` when given. A
    target no layout meets is not an error: the outcome says so and holds the best found.

    ``quantize="int8"`` (ONNX files): every layout is scored, judged and timed with its linear layers in
    int8, as the onnxruntime target's ``quantize="int8"`` builds it, against the float original; the profile's
    attention blocks stay float (they are), the rest of the model is priced from the quantized original.
    """
    s = settings_from(settings, overrides)
    progress, quantize = s.progress, s.quantize
    bar = progress_bar(0, False, "search")  # the search's bar, once it runs: what is said goes above it
    say = (lambda m: bar.write(m)) if progress else (lambda m: None)
    log = say if s.verbose else (lambda m: None)  # the step log; otherwise one bar
    check_constraints(s.min_fidelity, s.budget_ms)
    out_path = None
    sources = [p for p in (model if isinstance(model, (str, os.PathLike)) else None, s.profile) if p is not None]
    if output is not None:
        out_path = check_output_path(output, *sources)
        if out_path.suffix != ".json":
            raise UsageError(f"the layout is written as JSON: name the output *.json, not {out_path.name}")
    if report is not None and Path(report).exists() and not Path(report).is_dir():
        raise UsageError(f"report folder {report} is a file; give a folder for the report")
    paths = images_in(calib)
    calib_paths, validation_paths, held_paths = _split(paths, s)
    vit: ViTModel = open_model(model, input_shapes)
    evaluator = vit.evaluator(s.taps, quantize)
    backend = s.backend or vit.default_backend
    sites = vit.require_sites()
    ladder = _ladder(s.variants or default_variants(sites[0].grid), sites)
    notes = [n for n in [calibration.sizes_note(paths, vit.input_size)] if n]
    for n in notes:
        say(n)
    calib_images = calibration.load(calib_paths, vit.input_size)
    held_images = calibration.load(held_paths, vit.input_size)
    stage_folder = out_path.with_name(out_path.stem + "-learned") if out_path is not None else None
    if learned_rungs(ladder):
        say(f"search: stage 1, attention transfer of {', '.join(map(str, learned_rungs(ladder)))} at every site on "
            f"the {len(calib_paths)} calibration photos")
    transfer = stage1(vit, ladder, calib_images, s, stage_folder / "stage1" if stage_folder else None)
    checked = f" / {len(validation_paths)} validation" if validation_paths else ""
    say(f"search: {len(sites)} sites, {len(calib_paths)} calibration{checked} / {len(held_paths)} held-out photos, "
        f"variants {', '.join(map(str, ladder))}, latency from the {backend} profile"
        + (f", fidelity on the taps {', '.join(evaluator.taps)}" if evaluator.taps else ""))

    prof = _profile(sites, ladder, backend, s.profile, s.force_profile, progress)
    for n in _cost_notes(ladder, prof, sites):
        say(n)
        notes.append(n)
    # the original as the backend deploys it (onnxruntime: its attention kernel; with quantize: int8 layers)
    all_full = Layout(choices=[FULL] * len(sites))
    original_ms = interleaved([vit.timed_runner(all_full, backend, held_images[0], quantize)],
                              repeat=s.repeat)[0].median_ms
    if s.force_profile and s.profile is not None:  # another device's profile, as it is: nothing re-measured
        base_ms = base_from_measurement(prof, sites, original_ms)
    else:  # never on a negative base: blocks timed on a busy machine are measured again, or refused
        timings = iter([original_ms])
        base_ms = settled_base(prof, sites, lambda: next(timings, None) or interleaved(
            [vit.timed_runner(all_full, backend, held_images[0], quantize)], repeat=s.repeat)[0].median_ms,
            _remeasure(prof, sites, s.profile or default_profile_path(backend)))
    reference = evaluator.outputs(None, calib_images)
    calib_outputs = evaluator.scorer(calib_images, s.reuse_mb << 20)  # each layout from its first new site
    fidelity_cache: dict[str, float] = {}

    bar = progress_bar(s.max_evaluations + len(sites) * (len(ladder) - 1), progress and not s.verbose, "search",
                       "layout")
    best_so_far: list[tuple[float, float]] = []  # (fidelity, predicted ms) of the best layout scored so far

    def score(choices: list[Choice]) -> float:
        key = ",".join(map(str, choices))
        if key not in fidelity_cache:
            fidelity_cache[key] = compare(reference, calib_outputs(with_params(choices, transfer))).pearson
            point = (fidelity_cache[key], cost(choices))
            if not best_so_far or _better(point, best_so_far[0], s.min_fidelity, s.budget_ms):
                best_so_far[:] = [point]
            bar.step(f"best {best_so_far[0][0]:.4f} at {best_so_far[0][1]:.0f} ms")
        return fidelity_cache[key]

    def cost(choices: list[Choice]) -> float:
        return predict(prof, sites, list(choices), base_ms)

    sensitivity: dict[str, list[float]] = {}
    for v in ladder[:-1]:  # the rungs a site can leave: each site alone on v, the rest full; the last site
        # first, so that every other layout of the scan runs only from its own site on (prefix reuse)
        scores = {i: score([v if j == i else FULL for j in range(len(sites))]) for i in reversed(range(len(sites)))}
        sensitivity[str(v)] = [scores[i] for i in range(len(sites))]
        log(f"search: sensitivity of each site to {v}: " + " ".join(f"{x:.3f}" for x in sensitivity[str(v)]))
    def find(min_fidelity: float | None):
        """The beam search, then the head trim of the sites it kept full, for ``min_fidelity``."""
        result = beam_search(len(sites), ladder, score, cost, min_fidelity, s.budget_ms, s.beam, s.max_evaluations,
                             progress=log if s.verbose else None,
                             priority=lambda i, rung: 1 - sensitivity.get(str(ladder[rung]), [1.0] * len(sites))[i],
                             moves_per_layout=s.moves_per_layout)
        best = [parse_choice(c) for c in result.best.choices]
        if result.reached and min_fidelity is not None and FULL in best and ladder[-2].kind == "window":
            trimmed, tried = trim_full_heads(
                best, ladder[-2], [s.num_heads for s in sites], score, cost,
                lambda f, ms: meets_constraints(f, ms, min_fidelity, s.budget_ms),
                step=max(e.step for e in result.evaluated) + 1,
                max_evaluations=max(0, s.max_evaluations - len(result.evaluated)),
                progress=log if s.verbose else None)
            result = with_trimmed_heads(result, trimmed, tried)
        return result

    result = find(s.min_fidelity)
    # the calibration score flatters the layout it was chosen by: check it on validation photos, and when it
    # misses the target there, search again for the target raised by the gap (once)
    validation: dict[str, float] = {}
    if s.min_fidelity is not None and result.reached and len(validation_paths) >= 2:
        val_images = calibration.load(validation_paths, vit.input_size)
        val_ref = evaluator.outputs(None, val_images)

        def validate(choices) -> float:
            return compare(val_ref, evaluator.outputs(with_params([parse_choice(c) for c in choices], transfer),
                                                      val_images)).pearson
        validation[",".join(result.best.choices)] = found = validate(result.best.choices)
        if found < s.min_fidelity:
            raised = min(1.0, 2 * s.min_fidelity - found)
            notes.append(f"validation: the layout found keeps {result.best.fidelity:.4f} on the {len(calib_paths)} "
                         f"calibration photos but {found:.4f} on {len(validation_paths)} validation photos; searched "
                         f"again for {raised:.4f} on the calibration photos (the target raised by the gap)")
            say("search: " + notes[-1])
            result = find(raised)
            validation[",".join(result.best.choices)] = validate(result.best.choices)
    bar.close()
    say(("search: " if result.reached else "search: warning: ") + result.message)
    if calib_outputs.stats.reused:
        notes.append(f"prefix reuse: {calib_outputs.stats.describe()}")
        say("search: " + notes[-1])
    layout = with_params([parse_choice(c) for c in result.best.choices], transfer, vit.fingerprint)
    distilled = stage2(vit, layout, calib_paths, s, stage_folder / "stage2.safetensors" if stage_folder else None)
    if distilled is not None:
        layout = distilled.layout(layout)
        notes.append(f"stage 2: the layout's new parameters trained jointly for {distilled.steps} steps on the "
                     f"calibration photos: loss (1 - Pearson) {distilled.loss_before:.4f} -> {distilled.loss_after:.4f}")
        say("search: " + notes[-1])
    # judged on photos the search never saw: the result, and each single-variant layout for comparison
    held_ref = evaluator.outputs(None, held_images)
    judged = [str(layout)] + [",".join([str(v)] * len(sites)) for v in ladder if v != FULL or quantize]
    held = {}
    for text in dict.fromkeys(judged):
        candidate = layout if text == str(layout) else with_params(Layout.parse(text).choices, transfer)
        held[text] = compare(held_ref, evaluator.outputs(candidate, held_images)).pearson
    gap = held_out_note(s.min_fidelity, result.best.fidelity, held[str(layout)], len(calib_paths))
    if gap:
        say(gap)
        notes.append(gap)
    # speedups are over the original compiled the same way (same backend, same precision); the file as it is
    # is measured too, and labelled so
    lat = interleaved([vit.timed_runner(t, backend, held_images[0], quantize) for t in (None, layout, all_full)],
                      repeat=s.repeat)
    baseline = baseline_key(quantize)
    measured = {"original": lat[0].median_ms, str(layout): lat[1].median_ms, baseline: lat[2].median_ms}
    predicted = {"original": None, str(layout): result.best.predicted_ms, baseline: cost(all_full.choices)}
    if quantize:
        notes.append(f"{quantize}: every layout ran with its linear layers in {quantize}; the original so quantized "
                     f"runs {lat[2].median_ms:.1f} ms against {lat[0].median_ms:.1f} ms in float, and keeps "
                     f"{held[str(all_full)]:.4f} on the held-out photos")
        say(notes[-1])
    outcome = SearchOutcome(
        layout=layout, result=result, sensitivity=sensitivity, held_out=held,
        measured_ms=measured, predicted_ms=predicted, quantize=quantize,
        backend=backend, calibration=[p.name for p in calib_paths], held_out_photos=[p.name for p in held_paths],
        notes=notes, taps=list(evaluator.taps), transfer=transfer, distilled=distilled, validation=validation,
        validation_photos=[p.name for p in validation_paths])
    if out_path is not None:
        outcome.layout_path = layout.save(out_path)
    if report is not None:
        outcome.report_path = write_report(outcome, report)
    return outcome
