"""One small interface for every lowering backend, and the settings they share.

A ``Target`` says whether it can run here (and why not), and compiles a rewritten model into a
``Compiled`` object that runs, saves a deployable artifact, and benchmarks itself.
"""
from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..measure.timing import Latency, measure


@dataclasses.dataclass(frozen=True)
class CompileSettings:
    """Defaults in one place; names follow Torch-TensorRT where a backend has the same knob."""

    min_block_size: int = 5  # smallest subgraph TensorRT takes over
    workspace_size: int = 1 << 30  # bytes of TensorRT builder workspace
    timing_cache_path: str | None = None  # TensorRT timing cache, reused across builds
    attention_in_fp32: bool = True  # keep softmax scores in float32 (fp16 scores overflow at high res)
    optimization_level: int | None = None  # TensorRT builder optimisation level
    torch_compile_mode: str | None = None  # torch.compile(mode=...)
    tvm_trials: int = 0  # MetaSchedule trial budget for the tvm target; 0 builds untuned
    tvm_tune_tasks: int = 8  # tune at most this many tasks: the costliest matmul / conv / attention ones
    tvm_database: str | None = None  # MetaSchedule database folder; None: per device, beside the profiles
    tvm_remote: str | None = None  # "host:port/key" of a TVM RPC tracker: tune on that device, not here
    tvm_target: str | None = None  # None: this GPU, else llvm; "cuda -arch=sm_90": that GPU (build only without one)


class Compiled(abc.ABC):
    """A model lowered by one target: call it, save it, time it."""

    target: str

    @abc.abstractmethod
    def __call__(self, *inputs: torch.Tensor) -> Any: ...

    @abc.abstractmethod
    def save(self, folder: Path) -> list[str]:
        """Write the deployable artifact into ``folder``; return the file names."""

    def benchmark(self, *inputs: torch.Tensor, repeat: int = 10, warmup: int = 2) -> Latency:
        def run():
            self(*inputs)
            if torch.cuda.is_available():  # GPU work is asynchronous: time it to completion
                torch.cuda.synchronize()

        with torch.no_grad():
            return measure(run, repeat=repeat, warmup=warmup)


class Target(abc.ABC):
    name: str
    auto: bool = True  # whether ``target="auto"`` may pick it

    @abc.abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, what it will use) or (False, why not and what to install)."""

    @abc.abstractmethod
    def compile(self, program: torch.export.ExportedProgram, inputs: tuple[torch.Tensor, ...],
                settings: CompileSettings) -> Compiled: ...
