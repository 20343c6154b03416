"""Small helpers over torch.fx graphs shared by the FX passes."""
from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import fx

aten = torch.ops.aten

# ops that only move or relabel data; walking through them does not change what a value means
RESHAPES = {
    aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.expand.default,
    aten.clone.default, aten.contiguous.default, aten.alias.default,
}
PASS_THROUGH = {
    aten.dropout.default, aten.clone.default, aten.alias.default, aten.contiguous.default,
    aten.to.dtype, aten._to_copy.default, aten.detach.default,
}


def shape_of(node: Any) -> tuple | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def bind(node: fx.Node) -> dict[str, Any]:
    """The node's arguments by schema name (defaults filled in)."""
    schema = node.target._schema  # type: ignore[union-attr]
    out: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            out[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            out[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
    return out


def scalar(x: Any) -> float | None:
    """A Python number, or None."""
    if isinstance(x, bool):
        return None
    return float(x) if isinstance(x, numbers.Number) else None


def constant_value(gm: fx.GraphModule, node: Any, limit: int = 400) -> torch.Tensor | None:
    """Evaluate ``node`` if it depends on no graph input (only attributes and constants), else None."""
    if not isinstance(node, fx.Node):
        return torch.as_tensor(node) if scalar(node) is not None else None
    order: list[fx.Node] = []
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        if n.op == "placeholder" or n.op not in ("get_attr", "call_function") or len(seen) > limit:
            return None
        seen.add(n)
        stack.extend(n.all_input_nodes)
    order = [n for n in gm.graph.nodes if n in seen]
    env: dict[fx.Node, Any] = {}
    for n in order:
        if n.op == "get_attr":
            obj: Any = gm
            for part in n.target.split("."):  # type: ignore[union-attr]
                obj = getattr(obj, part)
            env[n] = obj
        else:
            args, kwargs = fx.node.map_arg((n.args, n.kwargs), lambda a: env[a])
            env[n] = n.target(*args, **kwargs)  # type: ignore[operator]
    out = env[node]
    return out if isinstance(out, torch.Tensor) else None


def is_identity_mask(value: torch.Tensor | None) -> bool:
    """True for a mask that changes nothing: all-True (bool) or all-zero (additive)."""
    if value is None:
        return False
    if value.dtype == torch.bool:
        return bool(value.all())
    return bool((value == 0).all())


def upstream(node: fx.Node, stop: set, limit: int = 60) -> set[fx.Node]:
    """Nodes between ``node`` and the nearest ``stop`` ops above it (bounded breadth-first walk)."""
    seen: set[fx.Node] = set()
    frontier = [node]
    while frontier and len(seen) < limit:
        n = frontier.pop(0)
        if n in seen:
            continue
        seen.add(n)
        if n.op == "call_function" and n.target not in stop:
            frontier.extend(n.all_input_nodes)
    return seen
