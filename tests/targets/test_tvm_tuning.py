"""The tvm target with MetaSchedule: a tiny tuning budget builds and runs, and a second compile reuses
the per-device database without a single new trial.

Tuning here costs about a minute on a 2-core CPU, most of it fixed: MetaSchedule imports TVM's tensor
intrinsics (~17 s) in this process and again in its build worker. So the budget is 1 task, 4 trials.
"""
import pytest
import torch

import jetvit_compile as jc
from jetvit_compile.errors import RewriteError
from jetvit_compile.targets import TARGETS, CompileSettings
from tiny_vit import tiny_program

pytestmark = pytest.mark.skipif(not TARGETS["tvm"].available()[0], reason="apache-tvm does not import here")


@pytest.fixture(scope="module")
def program():
    return tiny_program(32)


def _records(folder) -> list[str]:
    return (folder / "database_tuning_record.json").read_text().splitlines()


def test_tuned_build_runs_agrees_and_the_second_compile_reuses_the_database(program, tmp_path):
    x = torch.randn(1, 3, 32, 32)
    db = tmp_path / "db"
    settings = CompileSettings(tvm_trials=4, tvm_tune_tasks=1, tvm_database=str(db))

    first = jc.compile(program, "full", target="tvm", inputs=(x,), settings=settings, output=tmp_path / "out")
    tuning = first.compiled.tuning
    assert first.max_abs_error <= 1e-4 and (tmp_path / "out" / "model.so").stat().st_size > 0
    assert tuning["tasks"] == 1 and not tuning["reused"] and tuning["database"] == str(db)
    assert 0 < tuning["trials"] <= 4 and tuning["seconds"] > 0
    assert len(_records(db)) == tuning["trials"], "every trial run is a record in the database"
    recorded = (db / "database_tuning_record.json").read_bytes()

    second = jc.compile(program, "full", target="tvm", inputs=(x,), settings=settings)
    assert second.compiled.tuning["trials"] == 0 and second.compiled.tuning["reused"]
    assert (db / "database_tuning_record.json").read_bytes() == recorded, "nothing new was tuned"
    assert second.compiled.tuning["seconds"] < tuning["seconds"]

    untuned = jc.compile(program, "full", target="tvm", inputs=(x,))
    assert untuned.compiled.tuning == {"trials": 0, "seconds": 0.0, "database": None, "tasks": 0, "reused": False,
                                       "remote": None}
    expected = untuned.compiled(x)
    for tuned in (first, second):
        worst = (tuned.compiled(x) - expected).abs().max().item()
        assert worst <= 1e-4, f"tuned output differs from the untuned build by {worst:.2e}"


def test_default_database_is_per_device_beside_the_profiles(monkeypatch, tmp_path):
    from jetvit_compile.profiles.device import device_key
    from jetvit_compile.profiles.profile import default_profile_path
    from jetvit_compile.targets.tvm_tuning import default_database_dir

    monkeypatch.setenv("JETVIT_COMPILE_CACHE", str(tmp_path))
    folder = default_database_dir()
    assert folder == default_profile_path("torch").parent / "tvm-db" / device_key()
    assert str(folder).startswith(str(tmp_path))


def test_task_selection_keeps_only_the_costliest_matmul_like_tasks(program):
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.relax.frontend.torch import from_exported_program

    from jetvit_compile.targets.tvm_tuning import TUNED_OPS, _fused, select_tasks

    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    tasks = ms.relax_integration.extract_tasks(_fused(from_exported_program(program), target), target)
    chosen = select_tasks(tasks, 3)
    assert len(chosen) == 3 and len(tasks) > 3
    assert all(any(op in t.task_name for op in TUNED_OPS) for t in chosen)
    assert "conv2d" in chosen[0].task_name, "the patch embedding is the costliest kernel here"
    assert select_tasks(tasks, 0) == []


@pytest.mark.parametrize("damage", ["garbage", "file"])
def test_a_corrupt_database_names_the_folder_and_the_fix(program, tmp_path, damage):
    db = tmp_path / "db"
    if damage == "garbage":
        db.mkdir()
        (db / "database_workload.json").write_text("not json{\n")
        (db / "database_tuning_record.json").write_text("[1, 2\n")
    else:
        db.write_text("a file where the folder should be")
    settings = CompileSettings(tvm_trials=4, tvm_database=str(db))
    with pytest.raises(RewriteError) as e:
        TARGETS["tvm"].compile(program, (torch.randn(1, 3, 32, 32),), settings)
    assert str(db) in str(e.value) and "delete that folder to re-tune" in str(e.value)
