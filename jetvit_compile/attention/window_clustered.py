"""Window attention whose far field is read through content clusters of the keys, not spatial cells.

Pooled cells average tokens that sit together on the grid, whatever they say: a query that reads one token
of a cell gets the cell's mean value instead, and that is most of what the pooled variant loses
(bench/results/pooled_error_1036.md). Here the far tokens are grouped by what their keys say: each
block's patch keys are clustered per image and head (``clusters`` centroids, seeded at patch tokens
spread evenly over the grid, then ``iterations`` Lloyd steps on every ``sample``-th key; every key then
joins its nearest centroid). Keys in
one cluster are alike, so a query weighs a cluster's tokens alike, and the cluster's mean value is what
it would have read from them one by one.

A patch query attends to its window's tokens exactly, to the prefix tokens, and to each cluster's tokens
outside its window as one key: their mean key and value, its logit raised by log(how many they are), so
every token counts once (a window's own tokens are taken out of each cluster's sums; a cluster with no
token outside the window drops out). Prefix queries attend to every token. Nothing is learned: the
clustering runs on the block's own keys (ArgMax, one-hot sums as MatMuls in ONNX). Cost: ``clusters``
keys per query in place of pooled cells, one assignment of every patch key to the centroids and one
one-hot MatMul for the clusters' sums, plus the steps on the sampled keys.
"""
from __future__ import annotations

import math

import torch

from .core import attend
from .window import _from_windows, _padding_bias, _real_tokens, _to_windows, with_prefix_rows

ITERATIONS = 3  # Lloyd steps after seeding, each on every SAMPLE-th patch key (mini-batch k-means): at 1036 px
SAMPLE = 4  # as close to the original as three steps on every key, for a quarter of their cost (docs/results.md)


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
    """One-hot (float, ``[..., N, F]``) of each of ``keys`` (``[..., N, D]``) to its nearest of ``centroids``
    (``[B, H, F, D]``, broadcast over the keys' extra dims): ``|k - c|²`` is least where ``k·c - |c|²/2`` is
    largest, one MatMul with ``-|c|²/2`` in one more column; ties go to the lower index in both IRs."""
    lead = keys.shape[:-2]
    c1 = torch.cat([centroids, -0.5 * centroids.square().sum(-1, keepdim=True)], dim=-1)
    c1 = c1.reshape(*c1.shape[:2], *([1] * (len(lead) - 2)), *c1.shape[2:])
    k1 = torch.cat([keys, torch.ones(*lead, keys.shape[-2], 1, dtype=keys.dtype, device=keys.device)], dim=-1)
    nearest = (k1 @ c1.transpose(-1, -2)).argmax(dim=-1, keepdim=True)
    return (nearest == torch.arange(centroids.shape[2], device=keys.device)).to(keys.dtype)


def cluster_centroids(keys: torch.Tensor, grid: tuple[int, int], clusters: int, iterations: int = ITERATIONS,
                      sample: int = SAMPLE) -> torch.Tensor:
    """``[B, H, F, D]``: centroids of the patch ``keys`` (``[B, H, N, D]``) after ``iterations`` Lloyd steps
    from the seeds on every ``sample``-th key (an empty cluster stays where it was)."""
    centroids = keys.index_select(2, cluster_seeds(grid, clusters).to(keys.device))
    sampled = keys[:, :, ::sample]
    for _ in range(iterations):
        onehot = _assign(sampled, centroids)
        counts = onehot.sum(2).unsqueeze(-1)  # [B, H, F, 1]
        centroids = torch.where(counts > 0, (onehot.transpose(-1, -2) @ sampled) / counts.clamp_min(1), centroids)
    return centroids


def cluster_keys(keys: torch.Tensor, grid: tuple[int, int], clusters: int, iterations: int = ITERATIONS,
                 sample: int = SAMPLE) -> torch.Tensor:
    """``[B, H, N, F]`` one-hot assignment of the patch ``keys`` (``[B, H, N, D]``) to their clusters."""
    return _assign(keys, cluster_centroids(keys, grid, clusters, iterations, sample))


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
    sample: int = SAMPLE,
) -> torch.Tensor:
    b, h, n, d = q.shape
    p = num_prefix
    qp, kp, vp = (t[:, :, p:] for t in (q, k, v))
    centroids = cluster_centroids(kp, grid, clusters, iterations, sample)
    # the last assignment on the windowed keys: its one-hot comes out per window, padding slots masked out
    qw, kw, vw = (_to_windows(t, grid, window) for t in (qp, kp, vp))
    real = _real_tokens(grid, window, k.device).to(k.dtype).reshape(1, 1, *qw.shape[2:4], 1)
    member = _assign(kw, centroids)  # [B, H, nWin, w², F]
    f = member.shape[-1]
    # per window and cluster: key sum, value sum and count of the cluster's tokens outside the window
    own = member.transpose(-1, -2) @ torch.cat([kw, vw, real.expand(b, h, -1, -1, 1)], dim=-1)  # [B, H, nWin, F, 2D+1]
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
                 iterations: int = ITERATIONS, sample: int = SAMPLE):
        super().__init__()
        self.scale, self.grid, self.num_prefix = scale, tuple(grid), num_prefix
        self.window, self.clusters, self.iterations, self.sample = window, clusters, iterations, sample

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return clustered_window_attention(q, k, v, self.scale, self.grid, self.num_prefix, self.window,
                                          self.clusters, self.iterations, self.sample)

    def extra_repr(self) -> str:
        return (f"window={self.window}, clusters={self.clusters}, iterations={self.iterations}, sample={self.sample}, "
                f"grid={self.grid}, num_prefix={self.num_prefix}")
