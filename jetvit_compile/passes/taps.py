"""Taps: the intermediate tensors a task head reads, named by the user, for the search to judge fidelity on.

A dense head (DPT, as in DepthAnything) reads hidden states of a few blocks, not the model's first output;
its accuracy follows those features. A tap is named

* by a module path, ``backbone.encoder.layer.5``: the module's output (the last value computed inside it);
  in ONNX files that is the last node whose name starts ``/backbone/encoder/layer.5/``, as exporters name them;
* or exactly: an FX node name of the program (``add_14``), a value name of the ONNX graph.

A tap is looked up in the original graph; a rewrite keeps every value outside the attention it replaces,
so a tap inside a replaced attention site is refused when a rewrite lacks it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx

from ..errors import UsageError


def inside_replaced_attention(taps: Sequence[str]) -> UsageError:
    """The error for taps read inside an attention site that a rewrite replaces."""
    named = f"taps {', '.join(map(repr, taps))} lie" if len(taps) > 1 else f"tap {taps[0]!r} lies"
    return UsageError(f"{named} inside an attention site that the layout replaces; tap a block's output instead "
                      "(a module path like backbone.encoder.layer.5)")


def _unknown(name: str, examples: Sequence[str], where: str) -> UsageError:
    return UsageError(f"tap {name!r} is not a module path or a tensor name of {where}; name a block's output, "
                      f"e.g. {', '.join(repr(e) for e in examples[:3])}")


def fx_tap_nodes(gm: fx.GraphModule, taps: Sequence[str]) -> list[str]:
    """The FX node names ``taps`` stand for in ``gm`` (a torch.export program's module)."""
    names = {n.name for n in gm.graph.nodes}
    last_in_module: dict[str, str] = {}
    for node in gm.graph.nodes:  # topological: the last node seen in a module's scope is its output
        for path, _ in (node.meta.get("nn_module_stack") or {}).values():
            last_in_module[path] = node.name
    blocks = [p for p in last_in_module if p.rsplit(".", 1)[-1].isdigit()]
    resolved = []
    for tap in taps:
        if tap and tap in last_in_module:  # "" would be the whole model
            resolved.append(last_in_module[tap])
        elif tap in names:
            resolved.append(tap)
        else:
            raise _unknown(tap, blocks or sorted(names), "the program")
    return resolved


class _Recorder(torch.nn.Module):
    """Stores what it is called with under ``key`` in ``store``; returns nothing (nothing reads it)."""

    def __init__(self, store: dict, key: str):
        super().__init__()
        self.store, self.key = store, key

    def forward(self, x: torch.Tensor) -> None:
        self.store[self.key] = x


def record_fx_taps(gm: fx.GraphModule, nodes: Sequence[str], tap_names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Make ``gm`` store the values of ``nodes`` in the returned dict (by index) each time it runs. A tap
    missing from ``gm`` lies inside an attention site its rewrite replaced."""
    by_name = {n.name: n for n in gm.graph.nodes}
    store: dict[str, torch.Tensor] = {}
    for i, (node_name, tap) in enumerate(zip(nodes, tap_names)):
        node = by_name.get(node_name)
        if node is None:
            raise inside_replaced_attention([tap])
        gm.add_submodule(f"jetvit_tap_{i}", _Recorder(store, str(i)))
        with gm.graph.inserting_after(node):
            gm.graph.call_module(f"jetvit_tap_{i}", (node,))
    gm.recompile()
    return store


def expose_onnx_taps(model, taps: Sequence[str]) -> list[str]:
    """Make the values ``taps`` stand for outputs of ``model``'s graph (an ``onnx_ir.Model``, in place), so a
    session can fetch them; their value names, in order."""
    produced = {v.name: v for node in model.graph for v in node.outputs}
    last_in_scope: dict[str, str] = {}
    for node in model.graph:
        parts = (node.name or "").strip("/").split("/")[:-1]  # "/a/b.3/Add" lies in scopes a, a.b.3
        for depth in range(1, len(parts) + 1):
            last_in_scope[".".join(parts[:depth])] = node.outputs[0].name
    blocks = [p for p in last_in_scope if p.rsplit(".", 1)[-1].isdigit()]
    resolved = []
    for tap in taps:
        if tap in produced:
            resolved.append(tap)
        elif tap in last_in_scope:
            resolved.append(last_in_scope[tap])
        else:
            raise _unknown(tap, blocks or list(produced), "the ONNX graph")
    outputs = {v.name for v in model.graph.outputs}
    for name in dict.fromkeys(resolved):
        if name not in outputs:
            model.graph.outputs.append(produced[name])
    return resolved


def check_onnx_taps_kept(model, taps: Sequence[str], values: Sequence[str]) -> None:
    """Refuse taps whose values a rewrite of ``model`` (an ``onnx_ir.Model``) no longer computes."""
    produced = {v.name for node in model.graph for v in node.outputs}
    lost = [tap for tap, value in zip(taps, values) if value not in produced]
    if lost:
        raise inside_replaced_attention(lost)
