import math

import pytest
import torch
import torch.nn.functional as F

from jetvit_compile.attention import clustered_window_attention, pooled_window_attention
from jetvit_compile.attention.window_clustered import cluster_keys, cluster_seeds


def _slow_reference(q, k, v, scale, grid, prefix, window, clusters, iterations, sample):
    """Token by token, with the clustering done by plain Lloyd steps from the same seeds on every
    ``sample``-th patch key, then every key to its nearest centroid: a patch query sees
    the prefix keys, its window's tokens, and each cluster's tokens outside its window as their mean key
    and value with +log(their count); prefix queries see every token."""
    b, h, n, d = q.shape
    gh, gw = grid
    rows, cols = torch.arange(gh * gw) // gw, torch.arange(gh * gw) % gw
    seeds = cluster_seeds(grid, clusters).tolist()
    out = torch.zeros_like(q)
    out[:, :, :prefix] = torch.softmax(q[:, :, :prefix] @ k.transpose(-2, -1) * scale, -1) @ v
    for bi in range(b):
        for hi in range(h):
            keys = k[bi, hi, prefix:]
            centroids, sampled = keys[seeds].clone(), keys[::sample]
            for _ in range(iterations):
                label = torch.cdist(sampled.double(), centroids.double()).argmin(1)
                for c in range(len(seeds)):
                    if (label == c).any():
                        centroids[c] = sampled[label == c].mean(0)
            label = torch.cdist(keys.double(), centroids.double()).argmin(1)
            for i in range(gh * gw):
                same = (rows // window == rows[i] // window) & (cols // window == cols[i] // window)
                far_keys, far_vals, bias = [], [], []
                for c in range(len(seeds)):
                    members = torch.nonzero((label == c) & ~same).flatten()
                    if len(members):
                        far_keys.append(keys[members].mean(0))
                        far_vals.append(v[bi, hi, prefix + members].mean(0))
                        bias.append(math.log(len(members)))
                own = prefix + torch.nonzero(same).flatten()
                ks = torch.cat([k[bi, hi, :prefix], torch.stack(far_keys), k[bi, hi, own]])
                vs = torch.cat([v[bi, hi, :prefix], torch.stack(far_vals), v[bi, hi, own]])
                b_all = torch.cat([torch.zeros(prefix), torch.tensor(bias), torch.zeros(len(own))])
                out[bi, hi, prefix + i] = torch.softmax(q[bi, hi, prefix + i] @ ks.T * scale + b_all, -1) @ vs
    return out


@pytest.mark.parametrize("grid,prefix,window,clusters,iterations,sample", [
    ((8, 8), 1, 4, 6, 1, 1),
    ((7, 10), 5, 3, 9, 2, 3),  # padding, a non-square grid, steps on every third key
    ((9, 9), 0, 4, 4, 0, 4),  # seeds only
    ((8, 8), 1, 4, 6, 3, 4),  # the defaults' steps
])
def test_clustered_window_attention_matches_the_token_by_token_reference(grid, prefix, window, clusters, iterations,
                                                                         sample):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, prefix + grid[0] * grid[1], 4, generator=g) for _ in range(3))
    got = clustered_window_attention(q, k, v, 0.5, grid, prefix, window, clusters, iterations, sample)
    want = _slow_reference(q, k, v, 0.5, grid, prefix, window, clusters, iterations, sample)
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("window,clusters", [(3, 70), (10, 5)])
def test_one_cluster_per_token_or_one_window_over_the_grid_is_full_attention(window, clusters):
    """Every token its own cluster (a cluster of one is read exactly), or no token outside the window."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 5 + 7 * 10, 8, generator=g) for _ in range(3))
    got = clustered_window_attention(q, k, v, 0.5, (7, 10), 5, window, clusters)
    want = F.scaled_dot_product_attention(q, k, v, scale=0.5)
    assert (got - want).abs().max().item() < 1e-5


def test_seeds_spread_over_the_grid():
    seeds = cluster_seeds((74, 74), 256)
    assert len(set(seeds.tolist())) == 256
    rows, cols = seeds // 74, seeds % 74
    assert rows.unique().numel() == 16 and cols.unique().numel() == 16 and rows.min() < 5 and rows.max() > 68
    assert cluster_seeds((3, 4), 100).tolist() == list(range(12))  # more clusters than tokens: one per token


def test_a_token_joins_its_nearest_centroid():
    keys = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.2, 4.9]]).reshape(1, 1, 4, 2)
    onehot = cluster_keys(keys, (2, 2), 2, iterations=1, sample=1)
    assert onehot[0, 0].argmax(-1).tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    assert onehot.sum(-1).eq(1).all()


def test_content_clusters_beat_spatial_cells_when_alike_keys_lie_apart():
    """Keys that say the same thing scattered over the grid: a spatial cell averages unlike tokens, a content
    cluster alike ones; fewer clusters than cells still read the far field closer to full attention."""
    g = torch.Generator().manual_seed(3)
    kinds = torch.randn(8, 8, generator=g) * 2
    label = torch.randint(0, 8, (16 * 16,), generator=g)
    k = (kinds[label] + 0.1 * torch.randn(16 * 16, 8, generator=g)).reshape(1, 1, -1, 8).expand(1, 2, -1, 8)
    k = torch.cat([torch.randn(1, 2, 1, 8, generator=g), k], dim=2)
    q, v = (torch.randn(1, 2, 1 + 16 * 16, 8, generator=g) for _ in range(2))
    full = F.scaled_dot_product_attention(q, k, v, scale=0.5)
    pooled = (pooled_window_attention(q, k, v, 0.5, (16, 16), 1, 4, 2) - full).abs().mean()  # 64 cells
    clustered = (clustered_window_attention(q, k, v, 0.5, (16, 16), 1, 4, 16) - full).abs().mean()
    assert clustered < 0.5 * pooled
