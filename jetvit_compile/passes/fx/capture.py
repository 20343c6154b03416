"""Record q, k, v and the attention output at every site while an FX graph runs."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import fx

from ...sites import AttentionSite


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, wanted: dict[fx.Node, tuple[int, str]]):
        super().__init__(gm)
        self.wanted = wanted
        self.values: dict[int, dict[str, torch.Tensor]] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        for index, key in self.wanted.get(n, ()):
            self.values.setdefault(index, {})[key] = out.detach()
        return out


def capture_sites(gm: fx.GraphModule, sites: list[AttentionSite], *inputs,
                  indices: Iterable[int] | None = None) -> list[dict[str, torch.Tensor]]:
    """Per site ``{"q", "k", "v", "out"}`` (``[B, H, N, D]``; k un-transposed) for one run on ``inputs``;
    with ``indices``, only those sites are recorded (and returned, in site order): what one run holds in
    memory is then those sites' values alone."""
    if indices is not None:
        keep = set(indices)
        sites = [s for s in sites if s.index in keep]
    wanted: dict[fx.Node, list[tuple[int, str]]] = {}
    for s in sites:
        h = s.handles
        for key, node in (("q", h.q), ("k", h.k), ("v", h.v), ("out", h.out)):
            wanted.setdefault(node, []).append((s.index, key))
    rec = _Recorder(gm, wanted)
    with torch.no_grad():
        rec.run(*inputs)
    result = []
    for s in sites:
        vals = rec.values[s.index]
        if s.handles.k_transposed:
            vals["k"] = vals["k"].transpose(-2, -1)
        result.append(vals)
    return result
