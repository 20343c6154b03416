"""A learned correction for any window choice: a per-head temperature and a low-rank update of q and k,
applied inside the block before the training-free attention runs.

Window and pooled attention see fewer (or averaged) keys than full attention, so a query's weights are
spread differently: its softmax over fewer keys is too sharp where the missing keys would have taken
weight, and pooled logits are averages that flatten what a cell's single tokens would say. A per-head
temperature rescales every logit of the head; a rank-``r`` update ``x + (x A_h) B_h`` of q and k lets the block
re-aim its queries at what it can still see. Both are trained by attention transfer
(``distill/attention_transfer.py``) against the original block's output; the original Q/K/V/O weights stay
as they are (the update lives inside the block and sees the q and k the graph computes: after RoPE).

Init: ``B = 0`` and temperature ``exp(0) = 1``, so a fresh block is exactly (bit for bit) its training-free
counterpart; ``A`` starts random, from a fixed seed (its values do not change the output until ``B`` moves).
"""
from __future__ import annotations

import torch


class LearnedQKAttention(torch.nn.Module):
    """``inner(q', k', v)`` with ``q' = (q + q A_q B_q) · exp(t_h)`` and ``k' = k + k A_k B_k``; ``rank`` 0:
    temperature only."""

    def __init__(self, inner: torch.nn.Module, num_heads: int, head_dim: int, rank: int):
        super().__init__()
        self.inner, self.num_heads, self.rank = inner, num_heads, rank
        self.log_temperature = torch.nn.Parameter(torch.zeros(num_heads, 1, 1))
        if rank:
            # a fixed generator: building a block neither reads nor moves the caller's random state
            gen = torch.Generator().manual_seed(0)

            def down() -> torch.nn.Parameter:
                return torch.nn.Parameter(torch.randn(num_heads, head_dim, rank, generator=gen) / head_dim ** 0.5)

            self.q_down, self.k_down = down(), down()
            self.q_up = torch.nn.Parameter(torch.zeros(num_heads, rank, head_dim))
            self.k_up = torch.nn.Parameter(torch.zeros(num_heads, rank, head_dim))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.rank:
            q = q + torch.matmul(torch.matmul(q, self.q_down), self.q_up).to(q.dtype)
            k = k + torch.matmul(torch.matmul(k, self.k_down), self.k_up).to(k.dtype)
        return self.inner(q * torch.exp(self.log_temperature).to(q.dtype), k, v)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, rank={self.rank}"
