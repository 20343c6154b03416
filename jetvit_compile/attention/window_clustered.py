"""Window attention whose far field is read through content clusters of the keys, not spatial cells.

Pooled cells average tokens that sit together on the grid, whatever they say: a query that reads one token
of a cell gets the cell's mean value instead, and that is most of what the pooled variant loses
(bench/results/pooled_error_1036.md). Here the far tokens are grouped by what their keys say: each
block's patch keys are clustered per image and head (``clusters`` centroids, seeded at patch tokens
spread evenly over the grid, then ``iterations`` Lloyd steps; a token joins its nearest centroid). Keys in
one cluster are alike, so a query weighs a cluster's tokens alike, and the cluster's mean value is what
it would have read from them one by one.

A patch query attends to its window's tokens exactly, to the prefix tokens, and to each cluster's tokens
outside its window as one key: their mean key and value, its logit raised by log(how many they are), so
every token counts once (a window's own tokens are taken out of each cluster's sums; a cluster with no
token outside the window drops out). Prefix queries attend to every token. Nothing is learned: the
clustering runs on the block's own keys (ArgMax, one-hot sums as MatMuls in ONNX). Cost: about
``clusters`` keys per query in place of pooled cells, plus ``iterations + 1`` assignments of every patch
key to the centroids.
"""
from __future__ import annotations

import math

import torch

from .core import attend
from .window import _from_windows, _padding_bias, _to_windows, with_prefix_rows

ITERATIONS = 1  # Lloyd steps after seeding: docs/results.md, 2026-12-04 (a second step bought little)


def cluster_seeds(grid: tuple[int, int], clusters: int) -> torch.Tensor:
    """``[clusters]``: patch token indices spread evenly over the grid (rows and columns of a near-square
    lattice, row-major; the first ``clusters`` of it). From shapes alone: a constant in exported graphs."""
    gh, gw = grid
    clusters = min(clusters, gh * gw)
    rows = min(gh, max(1, round(math.sqrt(clusters * gh / gw))))
    cols = min(gw, -(-clusters // rows))
    rows = -(-clusters // cols)
    r = [int((i + 0.5) * gh / rows) for i in range(rows)]
    c = [int((j + 0.5) * gw / cols) for j in range(cols)]
    return torch.tensor([ri * gw + cj for ri in r for cj in c][:clusters])


def _assign(keys: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``[B, H, N, F]`` one-hot (float): each key's nearest centroid (``|k - c|²`` is least where
    ``k·c - |c|²/2`` is largest); ties go to the lower index in both IRs."""
    score = keys @ centroids.transpose(-1, -2) - 0.5 * centroids.square().sum(-1).unsqueeze(-2)
    nearest = score.argmax(dim=-1, keepdim=True)
    return (nearest == torch.arange(centroids.shape[2], device=keys.device)).to(keys.dtype)


def cluster_keys(keys: torch.Tensor, grid: tuple[int, int], clusters: int, iterations: int = ITERATIONS) -> torch.Tensor:
    """``[B, H, N, F]`` one-hot assignment of the patch ``keys`` (``[B, H, N, D]``) to their clusters."""
    centroids = keys.index_select(2, cluster_seeds(grid, clusters).to(keys.device))
    for _ in range(iterations):
        onehot = _assign(keys, centroids)
        counts = onehot.sum(2).unsqueeze(-1)  # [B, H, F, 1]
        sums = onehot.transpose(-1, -2) @ keys
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)  # an empty cluster stays put
    return _assign(keys, centroids)


def clustered_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    grid: tuple[int, int],
    num_prefix: int,
    window: int,
    clusters: int,
    iterations: int = ITERATIONS,
) -> torch.Tensor:
    b, h, n, d = q.shape
    p = num_prefix
    qp, kp, vp = (t[:, :, p:] for t in (q, k, v))
    onehot = cluster_keys(kp, grid, clusters, iterations)
    f = onehot.shape[-1]
    # per window and cluster: count, key sum and value sum of the cluster's tokens outside the window
    member = _to_windows(onehot, grid, window)  # [B, H, nWin, w², F]; padding belongs to no cluster
    qw, kw, vw = (_to_windows(t, grid, window) for t in (qp, kp, vp))
    ones = torch.ones(b, h, kw.shape[2], kw.shape[3], 1, dtype=k.dtype, device=k.device)
    own = member.transpose(-1, -2) @ torch.cat([kw, vw, ones], dim=-1)  # [B, H, nWin, F, 2D + 1]
    far = own.sum(2, keepdim=True) - own
    count = far[..., 2 * d:]
    k_far, v_far = (far[..., i * d:(i + 1) * d] / count.clamp_min(1) for i in (0, 1))
    # counts are whole numbers: a cluster wholly inside the window (count 0) gets log 0 = -inf
    far_bias = torch.log(count.squeeze(-1).round())
    n_win, w2 = qw.shape[2], qw.shape[3]
    keys = torch.cat([k[:, :, :p].unsqueeze(2).expand(b, h, n_win, p, d), k_far, kw], dim=3)
    values = torch.cat([v[:, :, :p].unsqueeze(2).expand(b, h, n_win, p, d), v_far, vw], dim=3)
    bias = torch.cat([torch.zeros(b, h, n_win, p, dtype=q.dtype, device=q.device), far_bias,
                      _padding_bias(grid, window, q.device).to(q.dtype).expand(b, h, n_win, w2)], dim=3)
    out = attend(qw.reshape(b, h * n_win, w2, d), keys.reshape(b, h * n_win, p + f + w2, d),
                 values.reshape(b, h * n_win, p + f + w2, d), scale, bias.reshape(b, h * n_win, 1, -1))
    return with_prefix_rows(q, k, v, scale, p, _from_windows(out.reshape(b, h, n_win, w2, d), grid, window))


class ClusteredWindowAttention(torch.nn.Module):
    def __init__(self, scale: float, grid: tuple[int, int], num_prefix: int, window: int, clusters: int,
                 iterations: int = ITERATIONS):
        super().__init__()
        self.scale, self.grid, self.num_prefix = scale, tuple(grid), num_prefix
        self.window, self.clusters, self.iterations = window, clusters, iterations

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return clustered_window_attention(q, k, v, self.scale, self.grid, self.num_prefix, self.window,
                                          self.clusters, self.iterations)

    def extra_repr(self) -> str:
        return (f"window={self.window}, clusters={self.clusters}, iterations={self.iterations}, grid={self.grid}, "
                f"num_prefix={self.num_prefix}")
