"""A learned correction for any window choice: a per-head temperature and a low-rank update of q and k,
applied inside the block before the training-free attention runs.

Window and pooled attention see fewer (or averaged) keys than full attention, so a query's weights are
spread differently: its softmax over fewer keys is too sharp where the missing keys would have taken
weight, and pooled logits are averages that flatten what a cell's single tokens would say. A per-head
temperature rescales every logit of the head; a rank-``r`` update ``x + (x A_h) B_h`` of q and k lets the block
re-aim its queries at what it can still see. Both are trained by attention transfer
(``distill/attention_transfer.py``) against the original block's output; the original Q/K/V/O weights stay
as they are (the update lives inside the block and sees the q and k the graph computes: after RoPE).

Init: ``B = 0`` and temperature 1, so a fresh block is exactly (bit for bit) its training-free
counterpart; ``A`` starts random, from a fixed seed (its values do not change the output until ``B`` moves).
"""
from __future__ import annotations

import torch


class LearnedQKAttention(torch.nn.Module):
    """``inner(q', k', v)`` with ``q' = (q + q A_q B_q) · t_h`` and ``k' = k + k A_k B_k``; ``rank`` 0:
    temperature only."""

    def __init__(self, inner: torch.nn.Module, num_heads: int, head_dim: int, rank: int):
        super().__init__()
        self.inner, self.num_heads, self.rank = inner, num_heads, rank
        # a plain factor, not exp(log t): exported, an Exp of an initializer is folded into a new constant
        self.temperature = torch.nn.Parameter(torch.ones(num_heads, 1, 1))
        if rank:
            # [q, k] factors stacked in one parameter each, read as they are by one MatMul: exported to ONNX,
            # same-shaped or sliced parameters may be merged or folded away (see attention/hedgehog.py)
            gen = torch.Generator().manual_seed(0)  # building a block neither reads nor moves the caller's RNG
            down = torch.randn(2, 1, num_heads, head_dim, rank, generator=gen) / head_dim ** 0.5
            self.down = torch.nn.Parameter(down)
            self.up = torch.nn.Parameter(torch.zeros(2, 1, num_heads, rank, head_dim))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.rank:
            qk = torch.stack([q, k])
            qk = qk + torch.matmul(torch.matmul(qk, self.down), self.up).to(q.dtype)
            q, k = qk[0], qk[1]
        return self.inner(q * self.temperature.to(q.dtype), k, v)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, rank={self.rank}"
