"""A rewritten model cut before one attention site: the part a layout's later choices change.

In a ViT the sites run one after the other, so everything a rewritten model computes before site ``c``'s
attention depends only on the layout's choices at sites ``0 .. c-1``. Two layouts that agree there compute
the same values up to the cut; the second needs only the *suffix*: every node downstream of site ``c``'s
block, with the values it reads from before the cut (the residual stream entering the block, features a
decoder took earlier) as graph inputs. The block's entry is the one value every path from the model's input
to the site's q, k and v passes through, nearest to them (:func:`block_entries`: the residual stream before the
norm in a pre-norm ViT); where there is none (e.g. RoPE tables computed from the input's shape), the cut is at
the attention itself and its q, k, v are the state. The search scores many such
layouts (each site alone in the sensitivity scan, one site moved per beam step); what it reuses is
:mod:`...frontend.onnx_prefix_reuse`'s business, this module only cuts.

``cut_state(model, sites, c, fetch, entries)`` names the values at cut ``c`` (what the suffix reads, and any fetched
value computed before the cut); ``cut_model(model, sites, c, fetch, dtypes, entries)`` turns ``model`` into the
suffix in place, with the states of later cuts added as outputs.
"""
from __future__ import annotations

from typing import Sequence

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from ...sites import AttentionSite
from ._graph_facts import names_read


def _site_readers(site: AttentionSite) -> list[ir.Node]:
    return [node for v in _site_values(site) for node in v.consumers()]


def _site_values(site: AttentionSite) -> list[ir.Value]:
    h = site.handles
    return [v for v in (h.q, h.k, h.k_transposed, h.v) if v is not None]


def block_entries(model: ir.Model, sites: list[AttentionSite]) -> tuple[str | None, ...]:
    """Each site's :func:`_block_entry` in ``model`` (the unrewritten one)."""
    constants = _constant_nodes(model)
    order = {node: i for i, node in enumerate(model.graph)}
    return tuple(_block_entry(sites, i, constants, order) for i in range(len(sites)))


def _block_entry(sites: list[AttentionSite], index: int, constants: set[ir.Node],
                 order: dict[ir.Node, int]) -> str | None:
    """The value site ``index``'s block is best cut at: among the values its q, k, v are computed from since
    the previous site, the one whose suffix reads the fewest values from before it (the residual stream
    entering the block, in a pre-norm ViT), the nearest on a tie; None where none gives a valid cut."""
    since = downstream(sites, index - 1) if index > 0 else None
    region, todo = set(), [v.producer() for v in _site_values(sites[index])]
    while todo:
        node = todo.pop()
        if node is None or node in region or node in constants or (since is not None and node not in since):
            continue
        region.add(node)
        todo.extend(v.producer() for v in node.inputs if v is not None)
    best: tuple[int, str] | None = None
    for node in sorted(region, key=order.get, reverse=True):  # nearest first: a tie keeps the nearer
        for value in node.outputs:
            after = downstream(sites, index, value)
            if after is None:
                continue
            reads = {v for n in after for v in n.inputs
                     if v is not None and v.producer() not in after and v.producer() not in constants
                     and not v.is_graph_input() and not v.is_initializer()}
            if best is None or len(reads) < best[0]:
                best = (len(reads), value.name)
    return None if best is None else best[1]


def downstream(sites: list[AttentionSite], index: int, entry: ir.Value | None = None) -> set[ir.Node] | None:
    """The nodes downstream of site ``index``'s block (the readers of its ``entry`` value, else of its q, k,
    v, and everything after them); None where the model cannot be cut there: a later site's attention is not
    downstream (not one site after the other), or the graph has subgraphs (If, Loop) whose reads this walk
    does not follow."""
    after: set[ir.Node] = set()
    todo = list(entry.consumers()) if entry is not None else _site_readers(sites[index])
    while todo:
        node = todo.pop()
        if node in after:
            continue
        if any(isinstance(a.value, (ir.Graph, list)) and a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
               for a in node.attributes.values()):
            return None
        after.add(node)
        todo.extend(c for out in node.outputs for c in out.consumers())
    if not after or any(not set(_site_readers(s)) <= after for s in sites[index:]):
        return None
    if any(set(_site_readers(s)) & after for s in sites[:index]):
        return None
    return after


def _constant_nodes(model: ir.Model) -> set[ir.Node]:
    """Nodes that read only weights and other such nodes (``Constant`` and what folds from it)."""
    weights = set(model.graph.initializers.values())
    found: set[ir.Node] = set()
    for node in model.graph:  # in graph order: producers first
        if all(v is None or v in weights or v.producer() in found for v in node.inputs) and not any(
                v.is_graph_input() for v in node.inputs if v is not None):
            found.add(node)
    return found


def _suffix_nodes(sites: list[AttentionSite], index: int, entries: Sequence[str | None],
                  constants: set[ir.Node], values: dict[str, ir.Value]) -> set[ir.Node] | None:
    name = entries[index] if index < len(entries) else None
    after = downstream(sites, index, values.get(name) if name is not None else None)
    return None if after is None else after | constants


def _state(model: ir.Model, after: set[ir.Node], fetch: list[str]) -> list[str]:
    own = set(model.graph.inputs) | set(model.graph.initializers.values())
    state: dict[str, None] = {}
    for node in model.graph:
        if node not in after:
            continue
        for value in node.inputs:
            if value is not None and value not in own and value.producer() not in after:
                state[value.name] = None
    produced_before = {v.name for n in model.graph if n not in after for v in n.outputs}
    state.update((name, None) for name in fetch if name in produced_before)
    return list(state)


def _values(model: ir.Model) -> dict[str, ir.Value]:
    return {v.name: v for n in model.graph for v in n.outputs}


def cut_state(model: ir.Model, sites: list[AttentionSite], index: int, fetch: list[str],
              entries: Sequence[str | None] = ()) -> list[str] | None:
    """The names of the values the suffix from site ``index`` reads from before the cut (graph inputs,
    weights and constants excluded: the suffix has those itself), then the values of ``fetch`` computed
    before the cut; None where the model cannot be cut there."""
    after = _suffix_nodes(sites, index, entries, _constant_nodes(model), _values(model))
    return None if after is None else _state(model, after, fetch)


def _cut_suffix(model: ir.Model, after: set[ir.Node], state: list[str], values: dict[str, ir.Value],
                fetch: list[str], record: list[str], dtypes: dict[str, ir.DataType]) -> None:
    """``model`` (changed in place) as the suffix of nodes ``after``: the values of ``state`` become graph
    inputs (of ``dtypes``), the outputs are the fetched values computed after the cut followed by
    ``record``'s values computed after it."""
    made_after = {v.name for n in after for v in n.outputs}
    model.graph.outputs[:] = [values[name] for name in dict.fromkeys([*fetch, *record]) if name in made_after]
    for name in state:
        old = values[name]
        new = ir.Value(name=name, type=ir.TensorType(dtypes[name]),
                       shape=None if old.shape is None else ir.Shape(old.shape))
        old.name = name + "/before_cut"
        old.replace_all_uses_with(new)
        model.graph.inputs.append(new)
    model.graph.remove([n for n in model.graph if n not in after], safe=False)
    RemoveUnusedNodesPass()(model)
    read = names_read(model.graph)
    for name in [n for n in model.graph.initializers if n not in read]:  # the prefix's weights
        model.graph.initializers.pop(name)


def cut_model(model: ir.Model, sites: list[AttentionSite], start: int | None, fetch: list[str],
              dtypes: dict[str, ir.DataType], entries: Sequence[str | None] = ()) -> dict[int, list[str]]:
    """``model`` (changed in place) as its suffix from site ``start`` (None: the whole model), with the state
    of every later cut where it can be cut added as outputs; returns those states, ``{cut: names}``.
    ``entries``: each site's block entry in the unrewritten model (:func:`block_entries`; None: cut at its
    attention)."""
    constants, values = _constant_nodes(model), _values(model)  # once: every cut reads them
    first = 0 if start is None else start
    states = {}
    for i in range(first + 1, len(sites)):
        after = _suffix_nodes(sites, i, entries, constants, values)
        if after is not None:
            states[i] = _state(model, after, fetch)
    record = list(dict.fromkeys(n for names in states.values() for n in names))
    if start is not None:
        after = _suffix_nodes(sites, start, entries, constants, values)
        if after is None:
            raise ValueError(f"the model cannot be cut before site {start}")
        _cut_suffix(model, after, _state(model, after, fetch), values, fetch, record, dtypes)
        return states
    present = {v.name for v in model.graph.outputs}
    model.graph.outputs.extend(values[n] for n in record if n not in present)
    return states
