"""Capture: run the original model on calibration images and record q, k, v and the attention output
at every site (after RoPE, where the model has it: the graph's own q and k are recorded).

Memory-bounded: images stream through one at a time; k and v are kept whole (every query needs all of
them), while q and the output keep a seeded random subset of query tokens (``max_queries``).
"""
from __future__ import annotations

import dataclasses

import torch

from ..passes.fx.capture import capture_sites
from ..passes.fx.program import sites_of
from ..sites import AttentionSite


@dataclasses.dataclass
class SiteCapture:
    site: AttentionSite
    q: torch.Tensor  # [images, H, Q, D]: the sampled queries
    k: torch.Tensor  # [images, H, N, D]
    v: torch.Tensor  # [images, H, N, D]
    out: torch.Tensor  # [images, H, Q, D]: the original attention output at the sampled queries
    query_index: torch.Tensor  # [Q]: which tokens were sampled (prefix tokens always included)


def capture(
    program: torch.export.ExportedProgram,
    images: list[torch.Tensor],
    max_queries: int | None = 512,
    seed: int = 0,
) -> list[SiteCapture]:
    """One SiteCapture per attention site of ``program``, over ``images`` (each ``[1, 3, H, W]``)."""
    gm = program.module()
    sites = sites_of(gm)
    n = sites[0].tokens
    gen = torch.Generator().manual_seed(seed)
    prefix = sites[0].num_prefix_tokens
    if max_queries is None or max_queries >= n:
        index = torch.arange(n)
    else:
        rest = prefix + torch.randperm(n - prefix, generator=gen)[: max(max_queries - prefix, 0)].sort().values
        index = torch.cat([torch.arange(prefix), rest])
    per_site: list[dict[str, list[torch.Tensor]]] = [{"q": [], "k": [], "v": [], "out": []} for _ in sites]
    for x in images:
        for store, vals in zip(per_site, capture_sites(gm, sites, x)):
            store["q"].append(vals["q"][:, :, index])
            store["out"].append(vals["out"][:, :, index])
            store["k"].append(vals["k"])
            store["v"].append(vals["v"])
    return [SiteCapture(s, *(torch.cat(st[key]) for key in ("q", "k", "v", "out")), index)
            for s, st in zip(sites, per_site)]
