"""AttentionSite: an IR-neutral description of one attention block found in a graph."""
from __future__ import annotations

import dataclasses
from typing import Any


Grid = tuple[int, int]  # patch rows, columns


@dataclasses.dataclass(frozen=True)
class AttentionSite:
    """One attention computation ``softmax(q kᵀ · scale) v`` found in a graph.

    ``q``/``k``/``v`` are ``[batch, num_heads, tokens, head_dim]``; the first ``num_prefix_tokens``
    tokens (class, registers) have no place on the patch grid, the remaining ``grid[0] * grid[1]``
    tokens are the patch tokens in row-major order.
    """

    index: int
    name: str  # the graph node (FX) or ONNX node that produces the attention output
    form: str  # "sdpa", "sdpa_flash", "sdpa_efficient", "matmul_softmax", "onnx_*", ...
    num_heads: int
    head_dim: int
    tokens: int
    num_prefix_tokens: int
    grid: tuple[int, int]
    scale: float
    has_rope: bool = False
    batch: int = 1
    dtype: str = "float32"
    handles: Any = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def embed_dim(self) -> int:
        return self.num_heads * self.head_dim

    def describe(self) -> dict[str, Any]:
        """JSON-friendly facts (no IR handles)."""
        # not dataclasses.asdict: it would deep-copy the IR handles
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "handles"}
        d["grid"] = list(self.grid)
        d["embed_dim"] = self.embed_dim
        return d


def grid_and_prefix(tokens: int, grid: tuple[int, int] | None, where: str) -> tuple[tuple[int, int], int]:
    """Check that ``tokens`` = prefix + grid tokens and return (grid, prefix count)."""
    from .errors import UnsupportedModelError

    if grid is None:
        raise UnsupportedModelError(
            f"{where}: cannot infer the patch grid (no patch-embedding convolution found); "
            "pass it explicitly, e.g. grid=(37, 37) in Python or --grid 37x37 on the command line"
        )
    prefix = tokens - grid[0] * grid[1]
    if prefix < 0:
        raise UnsupportedModelError(
            f"{where}: {tokens} tokens is fewer than the {grid[0]}x{grid[1]} patch grid; "
            "pass the right grid explicitly (grid=(H, W) / --grid HxW)"
        )
    return grid, prefix


def architecture_fingerprint(sites: list[AttentionSite]) -> str:
    """A short hash of what a layout depends on: per site heads, head dim, prefix tokens and RoPE.

    Resolution (tokens, grid) is left out on purpose: one layout serves a model at any input size.
    The same model gives the same fingerprint through torch.export and through ONNX.
    """
    import hashlib

    key = ";".join(f"{s.num_heads},{s.head_dim},{s.num_prefix_tokens},{int(s.has_rope)}" for s in sites)
    return "arch-" + hashlib.sha256(key.encode()).hexdigest()[:16]
