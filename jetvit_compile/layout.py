"""Layout: one attention choice per site, with the learned parameters of the new blocks.

Forms accepted wherever a layout is asked for (Python API and CLI alike):

* ``"window:14"`` – the same choice for every site;
* ``"full,window:14,linear:jetvit,..."`` – one choice per site, in site order;
* ``"window:14;full@5,11"`` – a default, then ``choice@i,j,...`` overrides (``;``-separated);
* a path to a layout JSON file (schema below) with an optional safetensors file beside it.

JSON: ``{"schema": "jetvit-layout", "version": 1, "fingerprint": "arch-…", "choices": [...],
"params": "name.safetensors" | null}``. Parameter names are ``site{i}.{param}``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import torch

from ._files import atomic_write
from .errors import UsageError

SCHEMA = "jetvit-layout"
VERSION = 1
LINEAR_VARIANTS = ("relu", "jetvit", "hedgehog")
LEARNED_RANK = 8  # ``+learned`` without a rank: bench/results/blockwise_518.md measured the candidates
_CHOICE_HELP = ("full, window:<size> (e.g. window:14), window:<size>+pool:<cell> (window plus pooled global "
                "keys, e.g. window:14+pool:4), window:<size>+pool:<cell>+route:<cells> (also reads each "
                "window's top cells token by token, e.g. window:15+pool:4+route:8), "
                "window:<size>+pool:<cell>+route:<cells>+group:<g> (cells ranked per g x g block of queries, g "
                "dividing the window, e.g. window:15+pool:4+route:8+group:5), "
                "window:<size>+pool:<cell>[+route:<cells>]+global:<tokens> (every window also reads the tokens per "
                "head that the image's mean query favours most, e.g. window:15+pool:4+global:256), "
                "window:<size>+cluster:<count> (far tokens read through <count> content clusters of the keys, "
                "e.g. window:15+cluster:256), any window "
                "choice +full:<h>.<h>... (those heads full attention, e.g. window:15+pool:4+route:32+full:1.2.5), "
                "any window choice +learned or +learned:<rank> (a per-head temperature and a rank-<rank> update of q "
                f"and k, learned by attention transfer; +learned is rank {LEARNED_RANK}, +learned:0 the temperature "
                "only; untrained it equals the choice without it, e.g. window:19+pool:4+learned), "
                "linear:relu, linear:jetvit (ReLU linear attention + a learned dynamic conv on V) or linear:hedgehog "
                "(linear attention with learned per-head feature maps + the learned conv)")


@dataclasses.dataclass(frozen=True)
class Choice:
    """What one site becomes: ``full``, ``window`` (with a size) or ``linear`` (with a variant).

    Learned choices (``linear:jetvit``, ``linear:hedgehog``, ``+learned``) take their parameters from the
    layout's ``site{i}.{param}`` values; without them they run at their documented init (attention/)."""

    kind: str
    window: int | None = None
    variant: str | None = None
    pool: int | None = None  # window only: also attend to the grid's keys pooled over pool x pool cells
    route: int | None = None  # pooled window only: also read each window's top ``route`` cells token by token
    global_tokens: int | None = None  # pooled window only: every window also reads these many global tokens
    group: int | None = None  # routed only: cells ranked per group x group block of queries (None: per window)
    cluster: int | None = None  # window only, instead of pool: far tokens read through this many key clusters
    full_heads: tuple[int, ...] | None = None  # window only: these heads run full attention instead
    learned: int | None = None  # window only: rank of the learned q/k correction (attention/learned_qk.py)

    @property
    def is_learned(self) -> bool:
        """Whether the block has parameters that attention transfer learns."""
        return self.learned is not None or (self.kind == "linear" and self.variant in ("jetvit", "hedgehog"))

    def __str__(self) -> str:
        if self.kind == "window":
            return (f"window:{self.window}" + (f"+pool:{self.pool}" if self.pool else "")
                    + (f"+cluster:{self.cluster}" if self.cluster else "")
                    + (f"+route:{self.route}" if self.route else "")
                    + (f"+group:{self.group}" if self.group else "")
                    + (f"+global:{self.global_tokens}" if self.global_tokens else "")
                    + ("+full:" + ".".join(map(str, self.full_heads)) if self.full_heads else "")
                    + ("" if self.learned is None else "+learned" if self.learned == LEARNED_RANK
                       else f"+learned:{self.learned}"))
        if self.kind == "linear":
            return f"linear:{self.variant}"
        return "full"


FULL = Choice("full")


def parse_choice(text: str) -> Choice:
    t = text.strip().lower()
    if t == "full":
        return FULL
    m = re.fullmatch(r"window:(?P<size>\d+)"
                     r"(?:\+pool:(?P<pool>\d+)(?:\+route:(?P<route>\d+)(?:\+group:(?P<group>\d+))?)?"
                     r"(?:\+global:(?P<tokens>\d+))?|\+cluster:(?P<cluster>\d+))?"
                     r"(?:\+full:(?P<heads>\d+(?:\.\d+)*))?(?P<learned>\+learned(?::(?P<rank>\d+))?)?", t)
    if m:
        size, pool, route, group, tokens, cluster = (int(m[g]) if m[g] else None
                                                     for g in ("size", "pool", "route", "group", "tokens", "cluster"))
        heads = tuple(sorted(int(h) for h in m["heads"].split("."))) if m["heads"] else None
        if heads and len(set(heads)) != len(heads):
            raise UsageError(f"{text!r} names a head twice in +full:")
        if any(n is not None and n < 1 for n in (size, pool, route, group, tokens, cluster)):
            raise UsageError(f"window, pool, route, group, global and cluster sizes must be at least 1, got {text!r}")
        if group is not None and size % group:
            raise UsageError(f"{text!r}: the route group {group} must divide the window {size} "
                             f"(e.g. window:15 with group:5 or group:3)")
        learned = (int(m["rank"]) if m["rank"] else LEARNED_RANK) if m["learned"] else None
        return Choice("window", window=size, pool=pool, route=route, global_tokens=tokens,
                      group=None if group == size else group, full_heads=heads, learned=learned, cluster=cluster)
    m = re.fullmatch(r"linear:(\w+)", t)
    if m and m.group(1) in LINEAR_VARIANTS:
        return Choice("linear", variant=m.group(1))
    raise UsageError(f"unknown attention choice {text!r}; use one of: {_CHOICE_HELP}")


@dataclasses.dataclass
class Layout:
    """A per-site plan. ``choices`` is fixed-length; ``default``/``overrides`` adapt to any site count."""

    choices: list[Choice] | None = None
    default: Choice | None = None
    overrides: dict[int, Choice] = dataclasses.field(default_factory=dict)
    fingerprint: str | None = None
    params: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> "Layout":
        """Parse the inline form (see module doc)."""
        text = text.strip()
        if not text:
            raise UsageError(f"empty layout; give a choice such as {_CHOICE_HELP}, or a layout JSON file")
        head, *groups = [g.strip() for g in text.split(";")]
        items = [parse_choice(t) for t in head.split(",")]
        overrides: dict[int, Choice] = {}
        for g in groups:
            m = re.fullmatch(r"([^@]+)@(\s*\d+(?:\s*,\s*\d+)*\s*)", g)
            if not m:
                raise UsageError(f"cannot read layout override {g!r}; write it as choice@i,j (e.g. full@5,11)")
            choice = parse_choice(m.group(1))
            for i in m.group(2).split(","):
                if i.strip():
                    overrides[int(i)] = choice
        if len(items) == 1:
            return cls(default=items[0], overrides=overrides)
        if overrides:
            raise UsageError("overrides (choice@i) go with a single default choice, not with a per-site list")
        return cls(choices=items)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Layout":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"layout file {path} does not exist") from None
        except OSError as e:
            raise UsageError(f"cannot read layout file {path} ({e.strerror or e})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"layout file {path} is not valid JSON ({e}); write it with Layout.save") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise UsageError(f"{path} is not a jetvit layout (missing \"schema\": \"{SCHEMA}\")")
        if data.get("version") != VERSION:
            raise UsageError(f"{path} has layout version {data.get('version')}; this jetvit-compile reads {VERSION}")
        choices = data.get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise UsageError(f"{path}: \"choices\" must be a list of strings such as \"full\" or \"window:14\"")
        params: dict[str, torch.Tensor] = {}
        if data.get("params"):
            ppath = path.parent / data["params"]
            if ppath.resolve().parent != path.resolve().parent:
                raise UsageError(f"{path}: parameter file must sit beside the layout, got {data['params']!r}")
            try:
                from safetensors.torch import load_file

                params = load_file(str(ppath))
            except FileNotFoundError:
                raise UsageError(f"{path} names parameters {ppath.name}, which does not exist") from None
            except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for bad files
                raise UsageError(f"{ppath}: not a readable safetensors file ({type(e).__name__})") from None
        return cls(
            choices=[parse_choice(c) for c in choices],
            fingerprint=data.get("fingerprint"),
            params=params,
        )

    @classmethod
    def coerce(cls, layout: "Layout | str | os.PathLike") -> "Layout":
        """A Layout from a Layout, an inline string, or a path to a JSON file."""
        if isinstance(layout, Layout):
            return layout
        if not isinstance(layout, (str, os.PathLike)):
            raise UsageError(f"a layout is a Layout, an inline string such as 'window:14' or a layout JSON path, "
                             f"got {type(layout).__name__}")
        text = os.fspath(layout)
        if text.endswith(".json") or os.path.sep in text:
            return cls.load(text)
        return cls.parse(text)

    # -- use ----------------------------------------------------------------------------------------
    def resolve(self, num_sites: int, fingerprint: str | None = None) -> list[Choice]:
        """One choice per site, checked against the model's site count and fingerprint."""
        if fingerprint and self.fingerprint and fingerprint != self.fingerprint:
            raise UsageError(
                f"layout was made for another model (fingerprint {self.fingerprint}, this model {fingerprint}); "
                "search or write a layout for this model"
            )
        if self.choices is not None:
            if len(self.choices) != num_sites:
                raise UsageError(
                    f"layout has {len(self.choices)} choices but the model has {num_sites} attention sites; "
                    f"give {num_sites} comma-separated choices or a single choice for all sites"
                )
            return list(self.choices)
        bad = sorted(i for i in self.overrides if not 0 <= i < num_sites)
        if bad:
            raise UsageError(f"layout overrides sites {bad}, but the model has sites 0..{num_sites - 1}")
        return [self.overrides.get(i, self.default or FULL) for i in range(num_sites)]

    def site_params(self, index: int) -> dict[str, torch.Tensor]:
        prefix = f"site{index}."
        return {k[len(prefix):]: v for k, v in self.params.items() if k.startswith(prefix)}

    def save(self, path: str | os.PathLike, num_sites: int | None = None) -> Path:
        """Write the JSON (and ``<stem>.safetensors`` when there are parameters), atomically."""
        path = Path(path)
        if self.choices is None and num_sites is None:
            raise UsageError("saving an inline layout needs num_sites to expand it")
        choices = self.choices if self.choices is not None else self.resolve(num_sites or 0)
        pname = None
        if self.params:
            from safetensors.torch import save_file

            pname = path.stem + ".safetensors"
            with atomic_write(path.parent / pname) as tmp:
                save_file({k: v.contiguous() for k, v in self.params.items()}, tmp)
        doc = {
            "schema": SCHEMA,
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "choices": [str(c) for c in choices],
            "params": pname,
        }
        with atomic_write(path) as tmp:
            Path(tmp).write_text(json.dumps(doc, indent=2) + "\n")
        return path

    def __str__(self) -> str:
        if self.choices is not None:
            return ",".join(map(str, self.choices))
        groups: dict[Choice, list[int]] = {}
        for i, c in sorted(self.overrides.items()):
            groups.setdefault(c, []).append(i)
        return ";".join([str(self.default or FULL)] + [f"{c}@{','.join(map(str, ix))}" for c, ix in groups.items()])


def compact(choices) -> str:
    """A layout for a person to read: runs of one choice counted, e.g. ``window:15+pool:4 x3 | full | linear:hedgehog
    x2`` (the JSON keeps the full text)."""
    runs: list[list] = []
    for c in (choices.choices if isinstance(choices, Layout) else choices):
        text = str(c)
        if runs and runs[-1][0] == text:
            runs[-1][1] += 1
        else:
            runs.append([text, 1])
    return " | ".join(text if n == 1 else f"{text} x{n}" for text, n in runs)
