"""MetaSchedule tuning for the tvm target, with a tuning database kept per device and reused.

Only the costliest tasks are tuned: those whose name says matmul, conv, dense or attention (the
projections, the attention products and the patch embedding), ranked by FLOPs times how often they
occur, at most ``settings.tvm_tune_tasks`` of them. The rest keep TVM's default schedules. A task
that already has a record in the database is not tuned again, so the second compile of a model on a
device runs no trials at all; raise the budget on a fresh folder (or delete the old one) to re-tune.

The database is MetaSchedule's ``JSONDatabase`` (``database_workload.json``,
``database_tuning_record.json``) in ``<profile folder>/tvm-db/<device key>/`` unless
``settings.tvm_database`` names another folder; MetaSchedule's own logs go to ``logs/`` inside it.

``settings.tvm_remote`` (``host:port/key``) measures the candidates on a device behind a TVM RPC
tracker (MetaSchedule's RPCRunner, see :mod:`.tvm_remote`) instead of on this machine, and the
default database is then ``<profile folder>/tvm-db/remote-<key>/``: records belong to the device
that timed them.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from ..errors import RewriteError
from .base import CompileSettings
from .tvm_remote import RemoteDevice
from .tvm_script_import import import_tensor_intrinsics

# fragments of MetaSchedule task names (fused-op names) worth a tuning budget on a ViT
TUNED_OPS = ("matmul", "conv", "dense", "attention")
# a batch of candidates can take minutes to build on this box's 2 cores, far above LocalBuilder's 30 s default
_BUILD_TIMEOUT_S = 900.0
_RUN_TIMEOUT_S = 120.0
_SEED = 0


def default_database_dir(remote: RemoteDevice | None = None) -> Path:
    """``<profile folder>/tvm-db/<device key>`` (or ``remote-<key>`` for a remote): beside the latency
    profiles, one database per device."""
    from ..profiles.device import device_key
    from ..profiles.profile import default_profile_path

    return default_profile_path("torch").parent / "tvm-db" / (f"remote-{remote.key}" if remote else device_key())


def open_database(folder: Path):
    """The JSON tuning database in ``folder`` (created empty when missing)."""
    from tvm.s_tir import meta_schedule as ms

    try:
        folder.mkdir(parents=True, exist_ok=True)
        return ms.database.JSONDatabase(work_dir=str(folder))
    except Exception as e:  # noqa: BLE001 - the JSON reader raises RuntimeError, the file system OSError
        raise RewriteError(
            f"TVM tuning database {folder} is unreadable or corrupt ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'}); delete that folder to re-tune"
        ) from e


def _fused(module, target):
    """The module after the passes ``compile_relax`` runs before it applies the database, so that the
    tasks extracted here have the same keys as the functions the build looks up."""
    import tvm
    from tvm import relax

    passes = [*relax.pipeline.library_dispatch_passes(target), relax.transform.LegalizeOps(),
              relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
              relax.transform.FuseOps(), relax.transform.FuseTIR()]
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(passes)(module)


def select_tasks(tasks: list, limit: int) -> list:
    """The ``limit`` costliest matmul / conv / attention tasks, costliest first."""
    from tvm.s_tir.analysis import estimate_tir_flops

    wanted = [t for t in tasks if any(op in t.task_name for op in TUNED_OPS)]
    wanted.sort(key=lambda t: -t.weight * estimate_tir_flops(t.dispatched[0]))
    return wanted[:max(limit, 0)]


def _untuned(tasks: list, database, target) -> list:
    return [t for t in tasks if database.query_tuning_record(t.dispatched[0], target, "main") is None]


def _runner(remote: RemoteDevice | None):
    from tvm.s_tir import meta_schedule as ms

    if remote is None:
        return ms.runner.LocalRunner(timeout_sec=_RUN_TIMEOUT_S)
    remote.servers()  # an unreachable tracker or unknown key fails here, not as failed trials
    return ms.runner.RPCRunner(rpc_config=remote.rpc_config(int(_RUN_TIMEOUT_S)), max_workers=1)


def _drop_unnamed_handlers(logger: logging.Logger) -> None:
    """MetaSchedule's logging set-up lists the handlers already on its logger by name and fails on one
    without a name ('NoneType' has no attribute 'format'); pytest attaches such handlers to loggers
    that do not propagate, so a second tuning in one test session would fail. The set-up replaces
    that logger's handlers anyway."""
    for handler in [h for h in logger.handlers if h.get_name() is None]:
        logger.removeHandler(handler)


def _tune(tasks: list, database, target, trials: int, folder: Path, remote: RemoteDevice | None) -> None:
    from tvm.s_tir import meta_schedule as ms

    runner = _runner(remote)  # first: a bad remote fails before minutes of candidate generation
    per_task = max(1, math.ceil(trials / len(tasks)))
    # MetaSchedule sets its console logger to DEBUG; the full log still goes to <folder>/logs
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    _drop_unnamed_handlers(logging.getLogger("tvm.s_tir.meta_schedule"))
    strategy = ms.search_strategy.EvolutionarySearch(population_size=min(512, max(64, 8 * per_task)))
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, str(folder), strategy=strategy, seed=_SEED)
    ms.tune.tune_tasks(
        tasks=contexts, task_weights=weights, work_dir=str(folder),
        max_trials_global=trials, max_trials_per_task=per_task, num_trials_per_iter=min(64, per_task),
        # each build worker imports tvm's tensor intrinsics: quickly, first (see tvm_script_import)
        builder=ms.builder.LocalBuilder(max_workers=1, timeout_sec=_BUILD_TIMEOUT_S,
                                        initializer=import_tensor_intrinsics),
        runner=runner,
        database=database,
    )


def tune_and_build(module, target, settings: CompileSettings) -> tuple[Any, dict]:
    """Tune ``module`` (tasks missing from the device's database only) and build it with the database.

    Returns the executable and a report: ``trials`` run this time, ``seconds`` spent in MetaSchedule
    (task extraction, look-up and tuning), ``database`` folder, ``tasks`` selected for tuning, and
    ``reused`` (every selected task came from the database, no trial ran), ``remote`` (the
    ``host:port/key`` that timed the trials, or None for this machine).
    """
    from tvm.s_tir import meta_schedule as ms

    import_tensor_intrinsics()  # tuning contexts and the database's builds import them (see tvm_script_import)
    remote = RemoteDevice.parse(settings.tvm_remote) if settings.tvm_remote else None
    folder = Path(settings.tvm_database) if settings.tvm_database else default_database_dir(remote)
    database = open_database(folder)
    start = time.perf_counter()
    tasks = select_tasks(ms.relax_integration.extract_tasks(_fused(module, target), target),
                         settings.tvm_tune_tasks)
    missing = _untuned(tasks, database, target)
    records_before = len(database)
    if missing and settings.tvm_trials > 0:
        _tune(missing, database, target, settings.tvm_trials, folder, remote)
    trials = len(database) - records_before
    seconds = time.perf_counter() - start
    executable = ms.relax_integration.compile_relax(database, module, target, None)
    report = {"trials": trials, "seconds": round(seconds, 3), "database": str(folder),
              "tasks": len(tasks), "reused": bool(tasks) and not missing, "remote": str(remote) if remote else None}
    return executable, report
