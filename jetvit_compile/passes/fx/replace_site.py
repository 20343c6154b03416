"""Swap one attention site of an FX graph for a module computing ``(q, k, v) -> out``."""
from __future__ import annotations

import torch
from torch import fx

from ...sites import AttentionSite


def submodule_name(site: AttentionSite) -> str:
    return f"jetvit_attention_{site.index}"


def replace_site(gm: fx.GraphModule, site: AttentionSite, module: torch.nn.Module) -> fx.Node:
    """Insert ``module`` as a submodule called on the site's q, k, v and reroute the output's users.

    The old attention nodes are erased.
    """
    h = site.handles
    name = submodule_name(site)
    gm.add_submodule(name, module)
    graph = gm.graph
    with graph.inserting_before(h.out):
        k = graph.call_function(torch.ops.aten.transpose.int, (h.k, -2, -1)) if h.k_transposed else h.k
        new = graph.call_module(name, (h.q, k, h.v))
    new.meta["val"] = h.out.meta.get("val")
    h.out.replace_all_uses_with(new)
    _erase_unused_above(graph, h.out)
    return new


def _erase_unused_above(graph: fx.Graph, node: fx.Node) -> None:
    """Remove the old attention nodes explicitly: dead-code elimination keeps sdpa (it is tagged random)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n.op == "call_function" and not n.users and n in graph.nodes:
            inputs = n.all_input_nodes
            graph.erase_node(n)
            stack.extend(inputs)
