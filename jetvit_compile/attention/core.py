"""The softmax core every attention variant ends in, and the form it takes in exported ONNX graphs.

Window, pooled and routed attention add a bias per key (padding and routed-away tokens: -inf; a pooled
cell's log token count) that is the same for every query of a window. In torch, ``sdpa`` with that bias
as ``attn_mask`` takes the fused kernels. Exported to ONNX, the same call becomes MatMul, Add (the bias
broadcast over ``[windows·heads, queries, keys]``, as large as the logits), Softmax, MatMul, and the Add
costs as much as the Softmax (ONNX Runtime CPU, 1036 px: 7 of 60 ms per routed block). A per-key bias is
a dot product with a constant 1: ``q·k·scale + b = [q·scale, 1]·[k, b]``. Under :func:`key_bias_folded`
(the ONNX lowering) the bias rides in one more column of q and k and the Add disappears: the same maths,
one fewer pass over the logits.
"""
from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F

_FOLD_KEY_BIAS = contextvars.ContextVar("jetvit_fold_key_bias", default=False)


@contextlib.contextmanager
def key_bias_folded():
    """Within this context :func:`attend` computes a key bias as an extra column of q and k (exporting)."""
    token = _FOLD_KEY_BIAS.set(True)
    try:
        yield
    finally:
        _FOLD_KEY_BIAS.reset(token)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           key_bias: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(q kᵀ · scale + key_bias) v`` over ``[B, H, N, D]`` tensors; ``key_bias`` is ``[B or 1, H or 1,
    1, keys]``: one value per key, shared by every query (None: no bias)."""
    if key_bias is None or not _FOLD_KEY_BIAS.get():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias, scale=scale)
    b, h, n, _ = q.shape
    keys = k.shape[2]
    # -inf stays exact as the most negative finite value: 1·min + a logit rounds to min, exp() to 0
    column = key_bias.clamp_min(torch.finfo(q.dtype).min).expand(b, h, 1, keys).transpose(-1, -2)
    q1 = torch.cat([q * scale, torch.ones(b, h, n, 1, dtype=q.dtype, device=q.device)], dim=-1)
    k1 = torch.cat([k, column.to(k.dtype)], dim=-1)
    return torch.softmax(q1 @ k1.transpose(-1, -2), dim=-1) @ v
