"""Scoring many layouts of one ONNX model on the same photos, each run only from its first site that differs
from a layout already run.

The values a rewritten model computes before site ``c``'s attention depend only on the choices (and learned
parameters) at sites ``0 .. c-1`` (:mod:`..passes.onnx.suffix`). So every layout scored keeps, per photo,
the state at each later site (the residual stream entering its block, what a decoder took earlier), and the next layout
that agrees with it on sites ``0 .. c-1`` runs only its suffix from ``c``: the sensitivity scan (one site
changed, the rest full), a beam step (one site of a layout moved), the head trim. What is kept is bounded in
bytes; the least recently used layouts' states go first. Exact: the suffix computes what the whole model
computes (to float rounding of ONNX Runtime's fusions at the cut).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib

import numpy as np
import onnx_ir as ir
import torch

from .._onnxruntime import cpu_session, run_owned
from ..layout import Layout
from ..passes.onnx.pipeline import SuffixCut, lower
from ..passes.onnx.suffix import block_entries
from ..passes.taps import inside_replaced_attention
from .base import ReuseStats

SiteKey = tuple[str, str]  # (choice, digest of its learned parameters)


def site_keys(layout: Layout) -> tuple[SiteKey, ...]:
    keys = []
    for i, choice in enumerate(layout.choices):
        digest = hashlib.sha1()
        for name, tensor in sorted(layout.site_params(i).items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        keys.append((str(choice), digest.hexdigest()))
    return tuple(keys)


@dataclasses.dataclass
class _Run:
    keys: tuple[SiteKey, ...]  # the layout that computed these states
    states: dict[int, list[dict[str, np.ndarray]]]  # cut -> per photo {value name: value}


class PrefixReuse:
    """``scorer(layout)``: what ``evaluator.outputs(layout, images)`` returns, running each layout from the
    latest site up to which a layout in memory shares its choices; states kept within ``max_bytes``."""

    def __init__(self, evaluator, images: list[torch.Tensor], max_bytes: int):
        self.evaluator, self.images, self.max_bytes = evaluator, images, max_bytes
        self.runs: collections.OrderedDict[int, _Run] = collections.OrderedDict()  # least recently used first
        self.stats = ReuseStats()
        self._next = 0
        tapped = evaluator.tapped  # where each block is cut (its residual stream), found once
        self.entries = block_entries(tapped.prepared, tapped.sites)

    def __call__(self, layout: Layout | str) -> list:
        layout = Layout.coerce(layout)
        ev = self.evaluator
        keys = site_keys(layout)
        start, source = self._find(keys)
        before = source.states[start] if source else [{} for _ in self.images]
        fetch = ev.fetch_names
        model, sites = ev.tapped.copy()
        dtypes = {name: ir.DataType.from_numpy(value.dtype) for name, value in before[0].items()}
        cut = SuffixCut(start if source else None, tuple(fetch), dtypes, self.entries)
        lowered = lower(model, layout, ev.lowering, sites, cut=cut, weights_apart=True)
        session = cpu_session(lowered.blob, weights=lowered.weights)
        names = [o.name for o in session.get_outputs()]
        lost = [tap for tap, f in zip(ev.taps, fetch) if f not in names and f not in before[0]]
        if lost:
            raise inside_replaced_attention(lost)
        wanted = {i.name for i in session.get_inputs()}
        outputs, states = [], {cut: [] for cut in lowered.states}
        for x, known in zip(self.images, before):
            feed = {ev.input_name: x.numpy().astype(ev.dtype)}
            feed.update((k, v) for k, v in known.items() if k in wanted)
            values = {**known, **dict(zip(names, run_owned(session, None, feed)))}
            fetched = [torch.from_numpy(values[f]) for f in fetch]
            outputs.append(fetched if ev.taps else fetched[0])
            for cut, state in lowered.states.items():
                states[cut].append({k: values[k] for k in state})
        self._count(start if source else 0, len(sites))
        self._keep(_Run(keys, states))
        return outputs

    def _find(self, keys: tuple[SiteKey, ...]) -> tuple[int, _Run | None]:
        best, found = 0, None
        for run_id, run in reversed(self.runs.items()):
            for cut in sorted(run.states, reverse=True):
                if cut > best and run.keys[:cut] == keys[:cut]:
                    best, found = cut, run_id
                    break
        if found is None:
            return 0, None
        self.runs.move_to_end(found)
        return best, self.runs[found]

    def _count(self, start: int, num_sites: int) -> None:
        s = self.stats
        s.evaluations += 1
        s.reused += start > 0
        s.sites_skipped += start
        s.sites_total += num_sites

    def _nbytes(self) -> int:
        arrays = {id(a): a.nbytes for run in self.runs.values() for photos in run.states.values()
                  for values in photos for a in values.values()}
        return sum(arrays.values())

    def _keep(self, run: _Run) -> None:
        """Keep ``run`` (its earliest cuts, as many as fit), dropping the least recently used runs first."""
        self.runs[self._next] = run
        self._next += 1
        while self._nbytes() > self.max_bytes and len(self.runs) > 1:
            self.runs.popitem(last=False)
        while self._nbytes() > self.max_bytes and run.states:
            run.states.pop(max(run.states))
