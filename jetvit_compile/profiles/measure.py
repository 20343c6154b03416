"""Measure attention block variants on this device: one timed block per distinct site shape and variant.

Backends: ``torch`` runs the reference module of ``attention/`` (on CUDA when torch sees a GPU, else CPU);
``onnxruntime`` runs the same block exported to ONNX exactly as the ONNX rewrite splices it in
(:func:`~jetvit_compile.passes.onnx.replacement.replacement_graph`) as the onnxruntime target lowers it
(full attention as ONNX Runtime's own kernel), in a CPU session.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from .._onnxruntime import CPU_EP, cpu_session, onnxruntime
from ..errors import UnsupportedModelError, UsageError
from ..layout import Choice, parse_choice
from ..measure.timing import measure
from ..progress import progress_bar
from ..passes.onnx.pipeline import ONNXRUNTIME, PORTABLE, OnnxLowering
from ..sites import AttentionSite
from .device import device_key
from .profile import Profile, check_backend, default_profile_path, site_entry_key

DEFAULT_VARIANTS = ("full", "window:7", "window:14", "window:14+pool:4", "window:14+pool:4+route:8",
                    "window:14+pool:4+route:8+global:128", "linear:relu", "linear:jetvit")
ONNX_IR_VERSION = 10


def _torch_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def backend_settings(backend: str) -> dict[str, Any]:
    """What, besides the device, decides the timings of ``backend`` (recorded in the profile)."""
    if check_backend(backend) == "torch":
        return {"device": _torch_device().type, "threads": torch.get_num_threads()}
    ort = onnxruntime("the onnxruntime backend")
    # blocks run as the onnxruntime target runs them: full attention as ONNX Runtime's own kernel
    return {"provider": CPU_EP, "onnxruntime": ort.__version__, "lowering": ONNXRUNTIME.name}


def _inputs(site: AttentionSite, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shape = (site.batch, site.num_heads, site.tokens, site.head_dim)
    dtype = getattr(torch, site.dtype)
    return tuple(torch.randn(shape, generator=gen).to(device=device, dtype=dtype) for _ in range(3))  # type: ignore[return-value]


def _torch_runner(site: AttentionSite, choice: Choice) -> Callable[[], object]:
    from ..attention import build_attention

    device = _torch_device()
    block = build_attention(choice, site).eval().to(device=device, dtype=getattr(torch, site.dtype))
    q, k, v = _inputs(site, device)

    def run() -> object:
        with torch.no_grad():
            out = block(q, k, v)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def onnx_block(site: AttentionSite, choice: Choice, lowering: OnnxLowering = PORTABLE) -> bytes:
    """The serialized ONNX model (opset 18) of one ``choice`` block at ``site``, lowered by ``lowering`` as
    the whole model's rewrite lowers it: inputs q, k, v [B, H, N, D]."""
    import onnx_ir as ir

    from ..passes.onnx.replacement import OPSET, replacement_graph

    graph = replacement_graph(site, choice, {}, False, "BHND", lowering.ort_kernels)
    graph.opset_imports[""] = OPSET
    model = ir.Model(graph, ir_version=ONNX_IR_VERSION, producer_name="jetvit-compile profile")
    return ir.serde.serialize_model(model).SerializeToString()


def _ort_runner(site: AttentionSite, choice: Choice) -> Callable[[], object]:
    session = cpu_session(onnx_block(site, choice, ONNXRUNTIME))
    names = [i.name for i in session.get_inputs()]
    feed = {n: x.numpy() for n, x in zip(names, _inputs(site, torch.device("cpu")))}
    return lambda: session.run(None, feed)


_RUNNERS = {"torch": _torch_runner, "onnxruntime": _ort_runner}


def _choices(variants: Iterable[Choice | str]) -> list[Choice]:
    out: list[Choice] = []
    for v in variants:
        c = v if isinstance(v, Choice) else parse_choice(v)
        if c not in out:
            out.append(c)
    if not out:
        raise UsageError("no variants to profile; give at least one of full, window:<size>, linear:relu, linear:jetvit")
    return out


def profile_sites(
    sites: Sequence[AttentionSite],
    variants: Iterable[Choice | str] = DEFAULT_VARIANTS,
    backend: str = "torch",
    profile: Profile | None = None,
    repeat: int = 10,
    warmup: int = 2,
    progress: bool = True,
) -> Profile:
    """Time each variant once per distinct site shape; return the profile (``profile`` itself, updated, when given).

    Sites that share tokens, heads, head_dim, prefix tokens, grid, batch and dtype are measured once.
    Variants that cannot run at a site (a window larger than its grid) are skipped. Entries already in
    ``profile`` are reused, not measured again. ``profile.run_summary`` says what happened:
    ``{"measured": n, "reused": n, "skipped": ["<entry key>: <why>", ...]}``.
    """
    from ..passes.checks import check_choice

    check_backend(backend)
    if repeat < 1 or warmup < 0:
        raise UsageError(f"repeat must be at least 1 and warmup at least 0 (got repeat={repeat}, warmup={warmup})")
    choices = _choices(variants)
    settings = backend_settings(backend)
    if profile is not None:
        if profile.backend != backend:
            raise UsageError(f"the profile given is for backend {profile.backend!r}, not {backend!r}; "
                             f"start a new profile for {backend!r} (profile=None)")
        if profile.device_key != device_key():
            raise UsageError(f"the profile given was measured on {profile.device_key}, this machine is {device_key()}; "
                             "measurements of two devices cannot share a profile: start a new one (profile=None)")
        if profile.settings.get("lowering") != settings.get("lowering"):
            profile = None  # its blocks were lowered otherwise (before ORT's attention kernel): measure afresh
    if profile is None:
        profile = Profile.new(backend, settings)
    todo: list[tuple[str, AttentionSite, Choice]] = []
    seen: set[str] = set()
    skipped: list[str] = []
    reused = 0
    for site in sites:
        for choice in choices:
            key = site_entry_key(site, choice)
            if key in seen:
                continue
            seen.add(key)
            reason = check_choice(site, choice, {})
            if reason:
                skipped.append(f"{key}: {reason}")
            elif key in profile.entries:
                reused += 1
            else:
                todo.append((key, site, choice))
    runner = _RUNNERS[backend]
    bar = progress_bar(len(todo), progress, f"profiling {backend}", "block")
    try:
        for key, site, choice in todo:
            latency = measure(runner(site, choice), repeat=repeat, warmup=warmup)
            profile.add(key, latency.median_s * 1e3, latency.p90_s * 1e3, latency.runs)
            bar.step(key)
    finally:
        bar.close()
    profile.run_summary = {"measured": len(todo), "reused": reused, "skipped": skipped}
    return profile


def sites_of_model(model: Any) -> list[AttentionSite]:
    """The attention sites of ``model``: an opened ViTModel (:func:`..frontend.open_model`), or a list of sites."""
    if isinstance(model, (list, tuple)) and all(isinstance(s, AttentionSite) for s in model):
        sites, where = list(model), "the sites given"
    elif hasattr(model, "sites") and hasattr(model, "label"):
        sites, where = model.sites, model.label
    else:
        raise UsageError(f"profiling takes an opened model or a list of AttentionSite, got {type(model).__name__} "
                         "(jetvit_compile.profile opens files and programs)")
    if not sites:
        raise UnsupportedModelError(f"{where}: no attention sites to profile (see jetvit-compile inspect)")
    return sites


def profile_model(model: Any, *args: Any, **kwargs: Any) -> Profile:
    """:func:`profile_sites` (same arguments after the first) on the sites of ``model``: an opened ViTModel
    or a list of sites."""
    return profile_sites(sites_of_model(model), *args, **kwargs)


def profile_to_file(
    model: Any,
    backend: str = "torch",
    path: str | os.PathLike | None = None,
    force: bool = False,
    **kwargs: Any,
) -> tuple[Profile, Path]:
    """Profile ``model`` and save it to ``path`` (default: :func:`default_profile_path`), reusing its entries.

    An existing file at ``path`` is extended (its entries are not measured again). One that cannot be
    extended (another device or backend, not a profile, corrupted) is a UsageError unless ``force``;
    ``force`` measures everything afresh and replaces the file (the fix for a profile timed on a busy machine). ``kwargs`` go to :func:`profile_model`.
    """
    check_backend(backend)
    target = Path(path) if path is not None else default_profile_path(backend)
    existing = None
    if target.exists() and not force:  # force: measured afresh (e.g. a profile timed on a busy machine)
        try:
            existing = Profile.load(target, force=False, backend=backend)
        except UsageError as e:
            if not force:
                raise UsageError(f"cannot extend {target}: {e} (for jetvit-compile profile, --force / force=True "
                                 "measures afresh and replaces the file; -o writes another file)") from None
    profile = profile_model(model, backend=backend, profile=existing, **kwargs)
    profile.save(target)
    return profile, target
