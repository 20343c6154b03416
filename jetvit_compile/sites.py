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


MAX_PREFIX = 8  # class token + registers: a grid read from the token count allows 0..8 tokens off the grid


def grids_from_tokens(tokens: int, image_hw: tuple[int, int] | None,
                      max_prefix: int = MAX_PREFIX) -> list[tuple[tuple[int, int], int]]:
    """Every (grid, prefix) with ``tokens = prefix + (H/p)(W/p)`` for a square patch ``p`` >= 2 that divides
    the input's height and width, and ``prefix`` in 0..max_prefix."""
    if not image_hw or None in image_hw:
        return []
    h, w = image_hw
    found = []
    for p in range(2, min(h, w) + 1):
        if h % p or w % p:
            continue
        prefix = tokens - (h // p) * (w // p)
        if 0 <= prefix <= max_prefix:
            found.append(((h // p, w // p), prefix))
    return found


def grid_and_prefix(tokens: int, grid: tuple[int, int] | None, where: str, *,
                    conv_grid: tuple[int, int] | None = None,
                    image_hw: tuple[int, int] | None = None) -> tuple[tuple[int, int], int]:
    """(grid, prefix count) of a site with ``tokens`` tokens: ``tokens`` = prefix + grid tokens.

    ``conv_grid`` is what the graph's patch-embedding convolution makes; ``grid`` (the user's) must agree with
    it. Without a convolution (a linear layer over unfolded patches) the grid is read from the input's
    spatial size ``image_hw`` and the token count when exactly one square patch size fits."""
    from .errors import UnsupportedModelError, UsageError

    if grid is not None and conv_grid is not None and tuple(grid) != tuple(conv_grid):
        raise UsageError(
            f"{where}: the grid {grid[0]}x{grid[1]} given contradicts the graph's patch-embedding convolution, "
            f"which makes a {conv_grid[0]}x{conv_grid[1]} grid; drop --grid / grid= (it is read from the graph)")
    given = grid if conv_grid is None else None
    grid = grid or conv_grid
    if grid is None:
        found = grids_from_tokens(tokens, image_hw)
        if len(found) == 1:
            return found[0]
        if found:
            options = ", ".join(f"{g[0]}x{g[1]} with {p} prefix tokens" for g, p in found)
            raise UnsupportedModelError(
                f"{where}: no patch-embedding convolution, and {tokens} tokens on a {image_hw[0]}x{image_hw[1]} "
                f"input fit several grids ({options}); pass the right one, e.g. --grid {found[0][0][0]}x"
                f"{found[0][0][1]} (grid=(H, W) in Python)")
        raise UnsupportedModelError(
            f"{where}: cannot infer the patch grid (no patch-embedding convolution found"
            + (f", and no square patch size turns the {image_hw[0]}x{image_hw[1]} input into {tokens} tokens"
               if image_hw and None not in image_hw else "")
            + "); pass it explicitly, e.g. grid=(37, 37) in Python or --grid 37x37 on the command line")
    prefix = tokens - grid[0] * grid[1]
    if prefix < 0:
        raise UnsupportedModelError(
            f"{where}: {tokens} tokens is fewer than the {grid[0]}x{grid[1]} patch grid; "
            "pass the right grid explicitly (grid=(H, W) / --grid HxW)"
        )
    if given is not None and prefix > grid[0] * grid[1]:
        raise UsageError(
            f"{where}: the grid {grid[0]}x{grid[1]} leaves {prefix} of the {tokens} tokens off the grid (as class/"
            "register tokens); that is not this model's patch grid: pass the right one (--grid HxW)")
    return grid, prefix


def architecture_fingerprint(sites: list[AttentionSite]) -> str:
    """A short hash of what a layout depends on: per site heads, head dim, prefix tokens and RoPE.

    Resolution (tokens, grid) is left out on purpose: one layout serves a model at any input size.
    The same model gives the same fingerprint through torch.export and through ONNX.
    """
    import hashlib

    key = ";".join(f"{s.num_heads},{s.head_dim},{s.num_prefix_tokens},{int(s.has_rope)}" for s in sites)
    return "arch-" + hashlib.sha256(key.encode()).hexdigest()[:16]
