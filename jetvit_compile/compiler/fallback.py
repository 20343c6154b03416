"""The fallback chain: build on each candidate target in turn until one works and agrees with the reference."""
from __future__ import annotations

from typing import Callable

from ..errors import JetViTError, RewriteError, VerificationError
from ..targets import Compiled

TOLERANCE = 1e-3  # float32 backends reorder sums; a real lowering bug is orders of magnitude larger


def try_targets(
    candidates: list[str],
    target: str,
    available: Callable[[str], tuple[bool, str]],
    build: Callable[[str], tuple[Compiled, float]],
    reference: str,
) -> tuple[str, Compiled, float, list[tuple[str, str]]]:
    """Build on each candidate in turn, skipping (and saying why) what is unavailable, fails or whose output
    differs from ``reference`` by more than TOLERANCE; ``build(name)`` gives (compiled, max abs error).
    Returns (name, compiled, error, skipped). A target named by the user that fails raises at once."""
    skipped: list[tuple[str, str]] = []
    for name in candidates:
        ok, why = available(name)
        if not ok:
            skipped.append((name, why))
            continue
        try:
            compiled, err = build(name)
        except JetViTError as e:
            skipped.append((name, str(e)))
            continue
        except Exception as e:  # noqa: BLE001 - backends fail in their own ways; auto moves on
            skipped.append((name, f"build failed: {type(e).__name__}: {e}".splitlines()[0]))
            continue
        if not err <= TOLERANCE:
            skipped.append((name, f"output differs from {reference} by {err:.2e} (> {TOLERANCE:g})"))
            if target != "auto":
                raise VerificationError(f"target {name}: compiled output differs from {reference} by {err:.2e}")
            continue
        return name, compiled, err, skipped
    if target != "auto":
        raise RewriteError(f"target {target} cannot compile the model here: {skipped[0][1]}")
    reasons = "; ".join(f"{n}: {w}" for n, w in skipped)
    raise RewriteError(f"no target could compile the model ({reasons})")
