"""Stage 1, block-wise attention transfer: train every learned candidate at every site once, so that, fed
the original q, k, v of calibration photos, it reproduces the original attention output.

JetViT's super-network trains all candidates jointly by distillation; block by block, each candidate at
each site only needs the captured inputs and output of its own site, which fits a CPU. The loss is the
output's squared error relative to the target's mean square (one scale for every site), plus, for blocks
with learned feature maps (``linear:hedgehog``), the KL divergence of their attention weights from
softmax's on the sampled queries (Hedgehog / LoLCATs: matching weights trains the feature maps faster and
more faithfully than the output alone). Original Q/K/V/O weights are not in the blocks: they stay frozen.

* Memory-bounded: one site's training photos in memory at a time (:mod:`.captures` streams them to disk);
  each step reads ``batch`` photos and scores ``queries`` sampled patch queries of each (prefix queries always).
* Seeded: each (site, candidate) has its own generator from ``seed``, the site and the choice, so its result
  is bit-identical on CPU whatever else runs, in whatever order.
* Resumable: each finished (site, candidate) is an atomic safetensors file in ``checkpoint``; a rerun reads
  it back instead of training (so a resumed run equals an uninterrupted one); a file written with other
  settings is refused.
* Judged on held-out photos: the last ``holdout`` captured photos are never trained on; the before/after
  table (:meth:`TransferResult.table`) is measured on them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from .._files import atomic_write
from ..attention import HedgehogAttention, build_attention
from ..errors import UsageError
from ..layout import Choice, parse_choice
from ..measure.fidelity import pearson
from ..progress import progress_bar
from .captures import CaptureStore


@dataclasses.dataclass(frozen=True)
class TransferSettings:
    steps: int = 150  # Adam steps per (site, candidate)
    lr: float = 5e-3
    batch: int = 2  # photos per step
    queries: int = 256  # sampled patch queries per photo and step, for the loss
    weight_loss: float = 1.0  # weight of the attention-weight KL term (feature-map blocks)
    holdout: int = 2  # the last captured photos, never trained on: the before/after table
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class SiteTransfer:
    """One (site, candidate) on the held-out photos: relative output error and mean Pearson, before/after."""

    site: int
    choice: str
    loss_before: float
    loss_after: float
    pearson_before: float
    pearson_after: float
    resumed: bool = False


@dataclasses.dataclass
class TransferResult:
    params: dict[str, dict[str, torch.Tensor]]  # str(choice) -> {"site{i}.<param>": tensor}
    rows: list[SiteTransfer]

    def layout_params(self, choices: Sequence[Choice]) -> dict[str, torch.Tensor]:
        """The ``site{i}.`` parameters of a layout whose site ``i`` takes ``choices[i]`` (for ``Layout(params=)``)."""
        out: dict[str, torch.Tensor] = {}
        for i, choice in enumerate(choices):
            prefix = f"site{i}."
            out.update({k: v for k, v in self.params.get(str(choice), {}).items() if k.startswith(prefix)})
        return out

    def table(self) -> str:
        """Markdown: per site and candidate, the held-out loss and Pearson before and after training."""
        lines = ["| site | candidate | loss before | loss after | Pearson before | Pearson after |",
                 "|---:|---|---:|---:|---:|---:|"]
        lines += [f"| {r.site} | {r.choice} | {r.loss_before:.4f} | {r.loss_after:.4f} | {r.pearson_before:.4f} | "
                  f"{r.pearson_after:.4f} |" for r in self.rows]
        return "\n".join(lines)


def attention_transfer(
    captures: CaptureStore,
    candidates: Iterable[Choice | str],
    sites: Iterable[int] | None = None,
    settings: TransferSettings = TransferSettings(),
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
) -> TransferResult:
    """Train each learned candidate at each captured site (or ``sites``); candidates with nothing to learn
    (``full``, ``window:19``, ``linear:relu``) are measured only, for the table."""
    choices = list(dict.fromkeys(c if isinstance(c, Choice) else parse_choice(c) for c in candidates))
    if not choices:
        raise UsageError("attention transfer needs at least one candidate choice, e.g. linear:hedgehog")
    train, held_out = _split(captures.photos, settings)
    indices = [s.index for s in captures.sites] if sites is None else [captures.site(i).index for i in sites]
    folder = Path(checkpoint) if checkpoint is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    todo = sum(settings.steps for i in indices for c in choices
               if c.is_learned and not (folder and _checkpoint_file(folder, i, c).is_file()))
    bar = progress_bar(todo, progress, "attention transfer")
    params: dict[str, dict[str, torch.Tensor]] = {str(c): {} for c in choices}
    rows = []
    try:
        for index in indices:
            data = None  # the site's training photos, loaded once for all its candidates
            for choice in choices:
                key = _settings_key(settings, captures, index, choice)
                done = _read_checkpoint(folder, index, choice, key) if folder and choice.is_learned else None
                if done is None:
                    if data is None and choice.is_learned:
                        data = captures.load(index, train)
                    state, row = _train_one(captures, index, choice, data, held_out, settings, bar)
                    if folder and choice.is_learned:
                        _write_checkpoint(folder, index, choice, key, state, row)
                else:
                    state, row = done
                params[str(choice)].update({f"site{index}.{k}": v for k, v in state.items()})
                rows.append(row)
    finally:
        bar.close()
    return TransferResult(params, rows)


def _split(photos: int, settings: TransferSettings) -> tuple[list[int], list[int]]:
    if settings.holdout < 1:
        raise UsageError(f"holdout must be at least 1 (got {settings.holdout}): the before/after losses are "
                         "measured on photos the training never saw")
    if photos < settings.holdout + 1:
        raise UsageError(f"attention transfer needs at least {settings.holdout + 1} captured photos ({settings.holdout} "
                         f"held out, at least one to train on); got {photos}: capture more calibration photos or "
                         "lower holdout")
    if settings.steps < 0 or settings.batch < 1 or settings.queries < 1:
        raise UsageError(f"steps must be >= 0 and batch, queries >= 1 (got {settings})")
    return list(range(photos - settings.holdout)), list(range(photos - settings.holdout, photos))


def _generator(settings: TransferSettings, index: int, choice: Choice) -> torch.Generator:
    # crc32, not hash(): Python salts str hashes per process, and the seed must be the same in every run
    return torch.Generator().manual_seed(zlib.crc32(f"{settings.seed}/{index}/{choice}".encode()))


def _train_one(captures: CaptureStore, index: int, choice: Choice, data: dict[str, torch.Tensor] | None,
               held_out: list[int], settings: TransferSettings, bar) -> tuple[dict[str, torch.Tensor], SiteTransfer]:
    site = captures.site(index)
    with torch.random.fork_rng():  # a block's fresh parameters (torch's default init) come from the seed too
        torch.manual_seed(_generator(settings, index, choice).initial_seed())
        block = build_attention(choice, site)
    before = _evaluate(block, captures, index, held_out)
    state: dict[str, torch.Tensor] = {}
    if choice.is_learned:
        gen = _generator(settings, index, choice)
        opt = torch.optim.Adam(block.parameters(), lr=settings.lr)
        stream: list[int] = []  # photo order: passes over the training photos, each shuffled
        for _ in range(settings.steps):
            while len(stream) < settings.batch:
                stream += torch.randperm(data["q"].shape[0], generator=gen).tolist()
            pick, stream = torch.tensor(stream[:settings.batch]), stream[settings.batch:]
            batch = {key: value.index_select(0, pick) for key, value in data.items()}
            opt.zero_grad()
            loss = _loss(block, batch, _queries(site, settings.queries, gen), site.scale, settings.weight_loss)
            loss.backward()
            opt.step()
            bar.step(f"site {index} {choice}: loss {loss.item():.4g}")
        state = {k: v.detach().clone() for k, v in block.state_dict().items()}
    after = _evaluate(block, captures, index, held_out) if choice.is_learned else before
    return state, SiteTransfer(index, str(choice), before[0], after[0], before[1], after[1])


def _queries(site, count: int, gen: torch.Generator) -> torch.Tensor:
    """Prefix queries and ``count`` random patch queries (all of them when there are fewer)."""
    p, n = site.num_prefix_tokens, site.tokens
    patch = p + torch.randperm(n - p, generator=gen)[:count].sort().values
    return torch.cat([torch.arange(p), patch])


def _loss(block: torch.nn.Module, batch: dict[str, torch.Tensor], idx: torch.Tensor, scale: float,
          weight_loss: float) -> torch.Tensor:
    q, k, v, target = batch["q"], batch["k"], batch["v"], batch["out"].index_select(2, idx)
    out = block(q, k, v).index_select(2, idx)
    loss = (out - target).square().mean() / target.square().mean()
    if isinstance(block, HedgehogAttention) and weight_loss:
        q_s = q.index_select(2, idx)
        log_p = torch.log_softmax(q_s @ k.transpose(-1, -2) * scale, dim=-1)
        log_a = torch.log(block.attention_weights(q_s, k).clamp_min(1e-12))
        loss = loss + weight_loss * (log_p.exp() * (log_p - log_a)).sum(-1).mean()
    return loss


@torch.no_grad()
def _evaluate(block: torch.nn.Module, captures: CaptureStore, index: int, photos: list[int]) -> tuple[float, float]:
    """Mean over ``photos`` (one in memory at a time) of the relative output error and Pearson, all tokens."""
    losses, corr = [], []
    for j in photos:
        data = captures.load(index, [j])
        out, target = block(data["q"], data["k"], data["v"]), data["out"]
        losses.append(float((out - target).square().mean() / target.square().mean()))
        corr.append(pearson(out, target))
    return sum(losses) / len(losses), sum(corr) / len(corr)


# -- checkpoints: one atomic file per (site, candidate) ---------------------------------------------------
def _checkpoint_file(folder: Path, index: int, choice: Choice) -> Path:
    return folder / f"site{index}.{re.sub(r'[^a-z0-9]+', '_', str(choice))}.safetensors"


def _settings_key(settings: TransferSettings, captures: CaptureStore, index: int, choice: Choice) -> str:
    site = captures.site(index)
    return json.dumps({**dataclasses.asdict(settings), "photos": captures.photos, "site": index,
                       "tokens": site.tokens, "heads": site.num_heads, "choice": str(choice)}, sort_keys=True)


def _write_checkpoint(folder: Path, index: int, choice: Choice, key: str, state: dict[str, torch.Tensor],
                      row: SiteTransfer) -> None:
    from safetensors.torch import save_file

    meta = {"settings": key, "row": json.dumps(dataclasses.asdict(row))}
    with atomic_write(_checkpoint_file(folder, index, choice)) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata=meta)


def _read_checkpoint(folder: Path, index: int, choice: Choice, key: str):
    from safetensors import safe_open

    path = _checkpoint_file(folder, index, choice)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("settings") != key:
            raise UsageError(f"checkpoint {path} was written by a run with other settings or captures "
                             f"({meta.get('settings')}); resume with the same ones, or use another checkpoint folder")
        state = {k: f.get_tensor(k) for k in f.keys()}
    row = SiteTransfer(**{**json.loads(meta["row"]), "resumed": True})
    return state, row
