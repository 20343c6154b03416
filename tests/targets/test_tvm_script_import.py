"""TVM's tensor intrinsics import with ``inspect.stack`` giving no source to frames of files not on disk,
and the intrinsics they register are the same (MetaSchedule imports them in every tuning and build worker)."""
from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from jetvit_compile.targets import TARGETS
from jetvit_compile.targets.tvm_script_import import _no_source_for_pseudo_files

pytestmark = pytest.mark.skipif(not TARGETS["tvm"].available()[0], reason="apache-tvm does not import here")


def test_the_stack_keeps_every_frame_and_the_source_of_real_files():
    here = inspect.stack()
    with _no_source_for_pseudo_files():
        fast = inspect.stack()
        pseudo = eval("inspect.stack()")  # a frame of file <string>, as exec'd and frozen code has
    assert inspect.stack.__module__ == "inspect", "restored on exit"
    assert [f.frame for f in fast[1:]] == [f.frame for f in here[1:]]
    assert [(f.filename, f.lineno, f.code_context) for f in fast[1:]] == \
        [(f.filename, f.lineno, f.code_context) for f in here[1:]]
    assert fast[0].code_context == ["        fast = inspect.stack()\n"]
    assert pseudo[0].filename == "<string>" and pseudo[0].code_context is None


def test_the_intrinsics_import_and_register_in_a_fresh_process():
    code = ("import inspect, sys; from jetvit_compile.targets.tvm_script_import import import_tensor_intrinsics; "
            "original = inspect.stack; import_tensor_intrinsics(); assert inspect.stack is original; "
            "from tvm.s_tir import TensorIntrin; TensorIntrin.get('dot_16x4_vnni'); "
            "import tvm.s_tir.tensor_intrin.cuda as cuda; print(cuda.__name__)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-1] == "tvm.s_tir.tensor_intrin.cuda"
