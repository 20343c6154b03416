"""Check a rewritten ONNX model against the reference maths, site by site, with ONNX Runtime.

One run of the rewritten model exposes every new block's inputs (q, k, v as the graph computed them)
and output; the reference module of ``attention/`` is applied to the same q, k, v in torch and the two
outputs must agree. This checks the ONNX lowering of each block, independent of how much the layout
changes the model's final output (which is the search's business, not the rewrite's).
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


def site_errors(model: ir.Model, spliced: list[Spliced], feed: dict[str, np.ndarray],
                params=lambda index: {}) -> list[float]:
    """Max abs difference between each spliced block's ONNX output and the torch reference."""

    probes = [v for s in spliced for v in (*s.inputs, s.output)]
    session = probe_session(model, probes, "checking the rewrite (or pass --no-verify)")
    values = dict(zip([v.name for v in probes], session.run([v.name for v in probes], feed)))
    errors = []
    for s in spliced:
        q, k, v = (torch.from_numpy(values[x.name]) for x in s.inputs)
        block = build_attention(s.choice, s.site, params(s.site.index))
        adapter = _Adapter(block, s.k_transposed, s.site.handles.output_layout).eval()
        with torch.no_grad():
            want = adapter(q, k, v).numpy()
        errors.append(float(np.abs(values[s.output.name] - want).max()))
    return errors


def verify(model: ir.Model, spliced: list[Spliced], feed: dict[str, np.ndarray], params=lambda index: {},
           tolerance: float = TOLERANCE) -> list[float]:
    errors = site_errors(model, spliced, feed, params)
    bad = [f"site {s.site.index} ({s.choice}): {e:.2e}" for s, e in zip(spliced, errors) if not e <= tolerance]
    if bad:
        raise VerificationError(f"rewritten ONNX differs from the reference maths beyond {tolerance:g}: "
                                + ", ".join(bad) + " (re-run with --no-verify to write it anyway)")
    return errors
