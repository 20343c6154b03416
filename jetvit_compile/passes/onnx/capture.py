"""Record q, k, v and the attention output at every site while ONNX Runtime runs an ONNX model.

The ONNX counterpart of ``passes/fx/capture.py``: each site's q, k (or kᵀ), v and output values (its
``handles``) become extra graph outputs of one ONNX Runtime CPU session, built once and run per input.
Values come back as the FX capture gives them: ``[B, H, N, D]``, k un-transposed, the output with its heads
split when the graph holds it merged (``[B, N, C]``, as the fused ops return it). What is recorded is what
the graph computes (after RoPE, where the model has it).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_ir as ir
import torch

from ...errors import RewriteError
from ...sites import AttentionSite
from .probe import probe_session


def _probes(site: AttentionSite) -> dict[str, ir.Value]:
    h = site.handles
    k = h.k if h.k is not None else h.k_transposed
    if h.q is None or k is None or h.v is None:
        raise RewriteError(f"site {site.index} ({site.name}): its q, k, v are not [B, H, N, D] tensors in the graph "
                           "(packed inside a fused op such as com.microsoft.Attention); capture the model before "
                           "fusing it")
    return {"q": h.q, "k": k, "v": h.v, "out": h.output}


class OnnxSiteCapture:
    """``OnnxSiteCapture(model, sites)(feed)`` -> per chosen site ``{"q", "k", "v", "out"}`` torch tensors.

    ``model`` is the ``ir.Model`` the ``sites`` were found in (it is left as it was); ``indices`` chooses
    the sites to record (default: all), which bounds what one run hands back.
    """

    def __init__(self, model: ir.Model, sites: list[AttentionSite], indices: Iterable[int] | None = None):
        wanted = set(indices) if indices is not None else {s.index for s in sites}
        self.sites = [s for s in sites if s.index in wanted]
        self._probes = [_probes(s) for s in self.sites]
        values = list(dict.fromkeys(v for probes in self._probes for v in probes.values()))
        self._names = [v.name for v in values]
        self._session = probe_session(model, values, "capturing an ONNX model")

    def __call__(self, feed: dict[str, np.ndarray]) -> list[dict[str, torch.Tensor]]:
        got = dict(zip(self._names, self._session.run(self._names, feed)))
        result = []
        for site, probes in zip(self.sites, self._probes):
            vals = {key: torch.from_numpy(np.ascontiguousarray(got[v.name])) for key, v in probes.items()}
            if site.handles.k is None:  # the graph holds kᵀ
                vals["k"] = vals["k"].transpose(-2, -1).contiguous()
            if site.handles.output_layout == "BNC":
                b, n, _ = vals["out"].shape
                vals["out"] = vals["out"].reshape(b, n, site.num_heads, -1).transpose(1, 2).contiguous()
            result.append(vals)
        return result
