"""The resumable state of an end-to-end distillation, in one atomic safetensors file.

It holds what the next step depends on: the learned values, Adam's moments and step counts, the step
reached, the loss curve so far and the losses and fidelity measured before training. The photo order is a
function of the seed and the step (see end_to_end), so nothing else is needed for a resumed run to equal an
uninterrupted one. ``run`` (a JSON string in the file's metadata) names the model, layout, photos and
settings it belongs to; a checkpoint of another run is refused, never silently continued.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from .._files import atomic_write
from ..errors import UsageError

SCHEMA = "jetvit-distill-checkpoint/1"


@dataclasses.dataclass
class TrainingState:
    step: int
    params: dict[str, torch.Tensor]  # site{i}.<param>
    optimizer: dict  # torch.optim.Adam.state_dict(); only its "state" is saved
    curve: list[float]
    before: dict[str, float]  # loss and held-out fidelity at the start


def save(path: Path, run: dict, state: TrainingState) -> None:
    from safetensors.torch import save_file

    tensors = {f"param/{k}": v.detach().cpu().contiguous() for k, v in state.params.items()}
    for index, slots in state.optimizer["state"].items():
        for key, value in slots.items():
            tensors[f"adam/{index}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["curve"] = torch.tensor(state.curve, dtype=torch.float64)
    meta = {"schema": SCHEMA, "run": json.dumps(run, sort_keys=True), "step": str(state.step),
            "before": json.dumps(state.before)}
    with atomic_write(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def load(path: Path, run: dict) -> TrainingState | None:
    """The state saved at ``path`` for this ``run``; None when there is no file yet."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(os.fspath(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise UsageError(f"checkpoint {path} is not a readable safetensors file ({type(e).__name__}); delete it "
                         "to start over") from None
    if meta.get("schema") != SCHEMA:
        raise UsageError(f"{path} is not an end-to-end distillation checkpoint; pass another checkpoint path")
    saved = json.loads(meta["run"])
    if saved != json.loads(json.dumps(run, sort_keys=True)):
        differ = sorted(k for k in set(saved) | set(run) if saved.get(k) != run.get(k))
        raise UsageError(f"checkpoint {path} belongs to another run (it differs in: {', '.join(differ)}); "
                         "delete it or pass another checkpoint path")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("adam/"):
            _, index, slot = key.split("/", 2)
            state.setdefault(int(index), {})[slot] = value
    params = {k.removeprefix("param/"): v for k, v in tensors.items() if k.startswith("param/")}
    optimizer = {"state": state}  # the param groups (lr, betas) are the run's settings, checked above
    return TrainingState(int(meta["step"]), params, optimizer, tensors["curve"].tolist(), json.loads(meta["before"]))
