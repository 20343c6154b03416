"""Import TVM's tensor intrinsics in seconds, not minutes.

MetaSchedule imports ``tvm.s_tir.tensor_intrin`` in every tuning context and in every build worker. Its 496
TVMScript ``@prim_func`` definitions each call ``inspect.stack()``, and for every frame whose file is not
on disk (the import system's ``<frozen ...>`` frames) ``inspect`` scans all of ``sys.modules`` looking for
the source: measured on this project's 2-core machine, the import takes 58 s in a bare process and 121 s
beside torch. TVMScript reads those frames' locals and the caller's source line, never a frozen frame's
source, so while the intrinsics are imported ``inspect.stack`` gives such frames no source context.
"""
from __future__ import annotations

import contextlib
import inspect
import sys

TENSOR_INTRINSICS = "tvm.s_tir.tensor_intrin"


def import_tensor_intrinsics() -> None:
    """Import :data:`TENSOR_INTRINSICS` once, quickly (also a build worker's initializer)."""
    if TENSOR_INTRINSICS in sys.modules:
        return
    with _no_source_for_pseudo_files():
        __import__(TENSOR_INTRINSICS)


@contextlib.contextmanager
def _no_source_for_pseudo_files():
    original = inspect.stack

    def stack(context: int = 1) -> list[inspect.FrameInfo]:
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if code.co_filename.startswith("<"):  # <frozen ...>, <string>: no source file to find
                frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name, None, None))
            else:
                frames.append(inspect.FrameInfo(frame, *inspect.getframeinfo(frame, context)))
            frame = frame.f_back
        return frames

    inspect.stack = stack
    try:
        yield
    finally:
        inspect.stack = original
