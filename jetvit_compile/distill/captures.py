"""Captures for attention transfer: each site's q, k, v and original attention output, per photo, on disk.

At 1036 px one photo's q, k, v and output at one site of a ViT-S are 34 MB, all twelve sites 400 MB: the
photos of a calibration set do not fit in memory together. So photos stream through the model one at a
time (one run records every chosen site), each (site, photo) goes to its own safetensors file, and
training reads one site's files at a time. q and k are the graph's own (after RoPE, where the model has
it). ``meta.json`` is written last: a folder without it is an interrupted capture, refused on reading.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from .._files import atomic_write
from ..errors import UsageError
from ..sites import AttentionSite

SCHEMA = "jetvit-captures"
_KEYS = ("q", "k", "v", "out")


class CaptureStore:
    """A capture folder: ``sites`` (without IR handles), ``photos`` (how many), ``load(site, photos)``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise UsageError(f"{self.folder} holds no finished capture (no meta.json: interrupted, or not a "
                             "capture folder); capture again into it")
        meta = json.loads(meta_path.read_text())
        if meta.get("schema") != SCHEMA:
            raise UsageError(f"{meta_path} is not a jetvit capture")
        self.photos: int = meta["photos"]
        self.source: str = meta["source"]
        self.sites = [_site(d) for d in meta["sites"]]

    def site(self, index: int) -> AttentionSite:
        for s in self.sites:
            if s.index == index:
                return s
        raise UsageError(f"site {index} was not captured (captured: {[s.index for s in self.sites]}); "
                         "capture it, or train the sites captured")

    def load(self, site: int, photos: Sequence[int]) -> dict[str, torch.Tensor]:
        """``{"q", "k", "v", "out"}``, each ``[len(photos), H, N, D]``."""
        from safetensors.torch import load_file

        self.site(site)
        parts = [load_file(str(_file(self.folder, site, j))) for j in photos]
        return {key: torch.cat([p[key] for p in parts]) for key in _KEYS}


def _site(facts: dict) -> AttentionSite:
    names = {f.name for f in dataclasses.fields(AttentionSite)} - {"handles"}
    kept = {k: v for k, v in facts.items() if k in names}
    return AttentionSite(**{**kept, "grid": tuple(kept["grid"])})


def _file(folder: Path, site: int, photo: int) -> Path:
    return folder / f"site{site}" / f"photo{photo}.safetensors"


def _write(folder: str | os.PathLike, sites: list[AttentionSite], runs: Iterator[list[dict[str, torch.Tensor]]],
           source: str) -> CaptureStore:
    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / "meta.json").unlink(missing_ok=True)  # until every photo is written, the folder is unfinished
    for s in sites:
        (folder / f"site{s.index}").mkdir(parents=True, exist_ok=True)
    photos = 0
    for photo, values in enumerate(runs):
        for s, vals in zip(sites, values):
            with atomic_write(_file(folder, s.index, photo)) as tmp:
                save_file({key: vals[key].contiguous() for key in _KEYS}, tmp)
        photos += 1
    if not photos:
        raise UsageError("no photos to capture: give at least one calibration photo")
    meta = {"schema": SCHEMA, "source": source, "photos": photos, "sites": [s.describe() for s in sites]}
    with atomic_write(folder / "meta.json") as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=1) + "\n")
    return CaptureStore(folder)


def _batched(images: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    for x in images:
        yield x if x.dim() == 4 else x.unsqueeze(0)


def capture_fx(program: torch.export.ExportedProgram, images: Iterable[torch.Tensor], folder: str | os.PathLike,
               indices: Iterable[int] | None = None) -> CaptureStore:
    """Run ``program`` on each of ``images`` (``[3, H, W]`` or ``[1, 3, H, W]``, the size it was exported
    at) and store the chosen sites' captures in ``folder``."""
    from ..passes.fx.capture import capture_sites
    from ..passes.fx.program import sites_of

    gm = program.module()
    sites = _chosen(sites_of(gm), indices)
    wanted = [s.index for s in sites]
    runs = (capture_sites(gm, sites, x, indices=wanted) for x in _batched(images))
    return _write(folder, sites, runs, "fx")


def capture_onnx(model, images: Iterable[torch.Tensor], folder: str | os.PathLike,
                 indices: Iterable[int] | None = None) -> CaptureStore:
    """The same from an ONNX model (an ``ir.Model`` or a path, with concrete input shapes) run by ONNX
    Runtime on CPU; its one image input takes each of ``images``."""
    from ..passes.onnx.capture import OnnxSiteCapture
    from ..passes.onnx.rewrite import sites_of

    import onnx_ir as ir

    model = model if isinstance(model, ir.Model) else ir.load(os.fspath(model))
    sites = _chosen(sites_of(model), indices)
    recorder = OnnxSiteCapture(model, sites)
    inputs = [v for v in model.graph.inputs if v.name not in model.graph.initializers]
    if len(inputs) != 1:
        raise UsageError(f"capturing needs a model with one image input; this one has {[v.name for v in inputs]}")
    name, dtype = inputs[0].name, inputs[0].dtype.numpy()
    runs = (recorder({name: x.numpy().astype(dtype)}) for x in _batched(images))
    return _write(folder, [dataclasses.replace(s, handles=None) for s in sites], runs, "onnx")


def _chosen(sites: list[AttentionSite], indices: Iterable[int] | None) -> list[AttentionSite]:
    if indices is None:
        return sites
    wanted = sorted(set(indices))
    known = {s.index for s in sites}
    if bad := [i for i in wanted if i not in known]:
        raise UsageError(f"sites {bad} do not exist; the model has sites 0..{len(sites) - 1}")
    return [s for s in sites if s.index in wanted]

