"""What a search is asked for: one frozen settings object, its defaults in one place (the CLI builds it)."""
from __future__ import annotations

import dataclasses

from ..errors import UsageError
from ..layout import Choice


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """``min_fidelity``: least mean Pearson correlation of the output (or of ``taps``) on calibration photos;
    ``budget_ms``: latency budget (the profile's cost model); at least one of them.

    ``taps`` names the tensors fidelity is judged on instead of the first output (module paths such as
    ``backbone.encoder.layer.5``, or FX node / ONNX value names; :mod:`..passes.taps`).
    ``variants``: the choices a site may take, cheapest first (None: :func:`.run.default_variants`).
    ``backend`` (None: onnxruntime for ONNX files, torch for programs) is what latency is profiled and
    measured on; ``profile`` a profile file to use and extend (``force_profile``: one from another device, as is).
    ``quantize="int8"`` (ONNX files): every layout scored, judged and timed with its linear layers in int8.
    ``held_out``: the share of the photos set aside to judge the result; ``max_calibration`` /
    ``max_held_out`` cap each side. ``validation`` photos (from the calibration side, never scored on) check
    the layout found: when it misses ``min_fidelity`` there, the search runs again with the target raised by
    the gap, and says so. ``beam``, ``moves_per_layout``, ``max_evaluations``: the beam search's
    width and effort. ``reuse_mb``: memory for the activations kept between scored layouts, so that a
    layout runs only from its first site that differs from one already run (ONNX files; 0: every layout
    runs whole). ``repeat``: timed runs per measured model (median). Learned rungs (``linear:hedgehog``,
    ``linear:jetvit``, ``+learned`` windows) are trained first (stage 1, ``transfer_steps``) and the chosen layout
    distilled end to end (stage 2, ``distill_steps``; 0: skip), on the calibration photos only.
    """

    min_fidelity: float | None = None
    budget_ms: float | None = None
    taps: tuple[str, ...] = ()
    variants: tuple[str | Choice, ...] | None = None
    backend: str | None = None
    profile: str | None = None
    force_profile: bool = False
    quantize: str | None = None
    held_out: float = 0.5
    max_calibration: int | None = 4
    validation: int = 4  # calibration-side photos that check the found layout; a gap raises the target once
    max_held_out: int | None = 8
    beam: int = 2
    moves_per_layout: int | None = 4
    max_evaluations: int = 200
    reuse_mb: int = 3072
    repeat: int = 5
    transfer_steps: int = 150  # stage 1 (learned rungs only): Adam steps per site and learned rung
    distill_steps: int = 100  # stage 2 (a chosen layout with learned sites): Adam steps, all its blocks jointly
    train_shapes: str | None = None  # stage 2 at another input size (ONNX files: NAME:1x3xHxW)
    device: str = "cpu"  # where the learned stages train
    seed: int = 0
    progress: bool = True  # one progress bar (best fidelity and predicted ms so far) and the notes, on stderr
    verbose: bool = False  # every step of the search instead of the bar

    def __post_init__(self) -> None:  # lists given by callers become tuples: the settings stay hashable
        object.__setattr__(self, "taps", tuple(self.taps or ()))
        if self.variants is not None:
            object.__setattr__(self, "variants", tuple(self.variants))
        if self.profile is not None:
            object.__setattr__(self, "profile", str(self.profile))
        self._check()

    def _check(self) -> None:
        """Values no search can mean, refused when the settings are made (before any model runs)."""
        import math

        problems = []
        f = self.min_fidelity
        if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float)) or not -1 <= f <= 1):
            problems.append(f"--min-fidelity is a Pearson correlation, between -1 and 1; got {f!r}")
        elif f is not None and f <= 0:
            problems.append(f"--min-fidelity {f} is met by any layout, even one that keeps nothing of the output "
                            "(a correlation of 0 or less); give a target above 0, e.g. 0.98")
        b = self.budget_ms
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0):
            problems.append(f"--budget is a latency in milliseconds, finite and above 0; got {b!r}")
        if self.variants is not None and not [v for v in self.variants if str(v).strip()]:
            problems.append("--variants is empty; give at least two choices, cheapest first (e.g. window:14,full), "
                            "or leave it out for the default ladder")
        r = self.reuse_mb
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            problems.append(f"--reuse-mb is a memory size in MiB, 0 or more; got {r!r}")
        v = self.validation
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v == 1:
            problems.append(f"--validation-images is a number of photos, 2 or more to check the layout found on "
                            f"(0: no check); got {v!r}")
        if problems:
            raise UsageError("; ".join(problems))

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **overrides) -> "SearchSettings":
        """These settings with ``overrides``; an unknown name is a UsageError naming the known ones."""
        unknown = sorted(set(overrides) - set(self.fields()))
        if unknown:
            raise UsageError(f"unknown search setting(s) {', '.join(unknown)}; known: {', '.join(self.fields())}")
        return dataclasses.replace(self, **overrides)


def settings_from(settings: SearchSettings | None, overrides: dict) -> SearchSettings:
    return (settings or SearchSettings()).replace(**overrides)
