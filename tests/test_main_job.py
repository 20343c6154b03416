from click.testing import CliRunner

from jetvit_compile.cli import main
from jetvit_compile.main_job import DEFAULT_LAYOUT, run_main_job


def test_main_job_compares_original_and_rewritten_on_real_photos():
    rows = run_main_job(size=224, images=2, repeat=1)
    original, rewritten = rows
    assert original.layout == "original" and original.speedup == 1.0 and original.fidelity is None
    assert rewritten.layout == DEFAULT_LAYOUT and rewritten.summary == {"to_window": 10, "to_linear": 0}
    assert rewritten.fidelity.images == 2 and -1.0 <= rewritten.fidelity.pearson < 1.0
    assert rewritten.fidelity.mae > 0 and rewritten.latency.median_s > 0


def test_demo_command_prints_the_side_by_side_table():
    r = CliRunner().invoke(main, ["demo", "--size", "224", "--images", "1", "--repeat", "1",
                                  "--layout", "window:16"])
    assert r.exit_code == 0, r.output
    lines = [l for l in r.output.splitlines() if l.startswith("| ")]
    assert lines[0].startswith("| layout | latency ms (median)") and len(lines) == 3
    assert lines[2].startswith("| window:16 |") and "| 1.000 |" in lines[2], "window covering 16x16 = full"


def test_demo_rejects_a_size_that_is_not_a_multiple_of_the_patch():
    r = CliRunner().invoke(main, ["demo", "--size", "500"])
    assert r.exit_code == 2 and "multiple of the patch size 14" in r.output
