"""Latency measurement: warm-up, repeats, median and p90 (CPU timings are noisy; never trust one run)."""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Latency:
    median_s: float
    p90_s: float
    runs: int

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3


def measure(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> Latency:
    return interleaved([fn], repeat, warmup)[0]


def interleaved(fns: list[Callable[[], object]], repeat: int = 5, warmup: int = 1) -> list[Latency]:
    """Time several functions in alternation (A B C A B C ...) so drifts in machine load hit all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [_summarise(ts) for ts in times]


def _summarise(times: list[float]) -> Latency:
    ts = sorted(times)
    return Latency(statistics.median(ts), ts[min(len(ts) - 1, round(0.9 * (len(ts) - 1)))], len(ts))
