"""Profile: measured latency of attention block variants on one device and backend, kept as JSON.

One entry per (variant, tokens, heads, head_dim, prefix tokens, grid, batch, dtype), keyed by a readable
string such as ``window:14/n1370/h6/d64/p1/g37x37/b1/float32``. File format::

    {"schema": "jetvit-profile", "version": 1,
     "device_key": "cpu-amd-epyc-2c-1a2b3c4d",          # for people; recomputed from "device" on load
     "device": {"cpu": {...}, "gpu": null, "software": {...}},
     "backend": "torch", "settings": {"device": "cpu", "threads": 2},
     "created": "2025-01-01T00:00:00+00:00",
     "entries": {"full/n65/h2/d16/p1/g8x8/b1/float32": {"median_ms": 0.05, "p90_ms": 0.06, "runs": 10}, ...}}

A profile measured on another device is refused on load (``force=True`` uses it anyway, with a
warning); one measured with other library versions on this device loads with a warning.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

from .._files import atomic_write
from ..errors import UsageError
from ..layout import Choice, parse_choice
from ..sites import AttentionSite
from .device import describe, device_fingerprint, device_key, software_differences

SCHEMA = "jetvit-profile"
VERSION = 1
BACKENDS = ("torch", "onnxruntime")
ENTRY_FIELDS = ("median_ms", "p90_ms", "runs")
_REQUIRED = ("device", "backend", "entries")


def _reprofile_hint(backend: str | None = None) -> str:
    return f"re-profile with: jetvit-compile profile MODEL --target {backend or 'BACKEND'}"


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UsageError(f"cannot profile backend {backend!r}; profiles are measured on: {', '.join(BACKENDS)}")
    return backend


def variant_name(variant: Choice | str) -> str:
    """The canonical variant string (``full``, ``window:14``, ``linear:relu``, ``linear:jetvit``)."""
    return str(variant if isinstance(variant, Choice) else parse_choice(variant))


def entry_key(variant: Choice | str, tokens: int, heads: int, head_dim: int, prefix: int,
              grid: tuple[int, int], batch: int = 1, dtype: str = "float32") -> str:
    """``variant/n<tokens>/h<heads>/d<head_dim>/p<prefix>/g<rows>x<cols>/b<batch>/<dtype>``."""
    return (f"{variant_name(variant)}/n{tokens}/h{heads}/d{head_dim}/p{prefix}/"
            f"g{grid[0]}x{grid[1]}/b{batch}/{dtype}")


def site_entry_key(site: AttentionSite, variant: Choice | str) -> str:
    """The entry key of ``variant`` at ``site`` (sites of the same shape share it)."""
    return entry_key(variant, site.tokens, site.num_heads, site.head_dim, site.num_prefix_tokens,
                     tuple(site.grid), site.batch, site.dtype)


@dataclasses.dataclass
class Profile:
    """Latency of attention block variants measured on one device (``device``) with one ``backend``.

    ``entries`` maps an entry key (see :func:`entry_key`) to ``{"median_ms", "p90_ms", "runs"}``.
    ``run_summary`` (not saved) says what the last :func:`~jetvit_compile.profiles.profile_sites` call
    did: ``{"measured": int, "reused": int, "skipped": [str, ...]}``.
    """

    device: dict[str, Any]
    backend: str
    entries: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str | None = None
    run_summary: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def new(cls, backend: str, settings: Mapping[str, Any] | None = None) -> "Profile":
        """An empty profile of this machine."""
        return cls(device=device_fingerprint(), backend=check_backend(backend), settings=dict(settings or {}),
                   created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))

    @property
    def device_key(self) -> str:
        return device_key(self.device)

    # -- entries ------------------------------------------------------------------------------------
    def get(self, site: AttentionSite, variant: Choice | str) -> dict[str, Any] | None:
        return self.entries.get(site_entry_key(site, variant))

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, key: str, median_ms: float, p90_ms: float, runs: int) -> None:
        problem = entry_problem({"median_ms": median_ms, "p90_ms": p90_ms, "runs": runs})
        if problem:
            raise UsageError(f"profile entry {key!r}: {problem}")
        self.entries[key] = {"median_ms": float(median_ms), "p90_ms": float(p90_ms), "runs": int(runs)}

    # -- JSON ---------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "device_key": self.device_key,
            "device": self.device,
            "backend": self.backend,
            "settings": self.settings,
            "created": self.created,
            "entries": {k: self.entries[k] for k in sorted(self.entries)},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the profile as JSON, atomically (the folder is created when missing)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, data: Any, where: str = "profile") -> "Profile":
        """Check and read a decoded profile document; every problem is a UsageError naming ``where``."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise UsageError(f"{where} is not a jetvit latency profile (missing \"schema\": \"{SCHEMA}\"); "
                             f"give a file written by jetvit-compile profile, or {_reprofile_hint()}")
        backend = data.get("backend") if isinstance(data.get("backend"), str) else None
        if data.get("version") != VERSION:
            raise UsageError(f"{where} has profile version {data.get('version')!r}; this jetvit-compile reads "
                             f"version {VERSION}; {_reprofile_hint(backend)}")
        missing = [f for f in _REQUIRED if f not in data]
        if missing:
            raise UsageError(f"{where} is missing {', '.join(map(repr, missing))}; {_reprofile_hint(backend)}")
        device, entries = data["device"], data["entries"]
        if not isinstance(device, dict) or not isinstance(device.get("cpu"), dict):
            raise UsageError(f"{where}: \"device\" is not a device fingerprint; {_reprofile_hint(backend)}")
        if backend is None:
            raise UsageError(f"{where}: \"backend\" must be one of {', '.join(BACKENDS)}; {_reprofile_hint()}")
        if not isinstance(entries, dict):
            raise UsageError(f"{where}: \"entries\" is not a mapping; {_reprofile_hint(backend)}")
        clean: dict[str, dict[str, Any]] = {}
        for key, entry in entries.items():
            problem = entry_problem(entry)
            if problem:
                raise UsageError(f"{where}: entry {key!r}: {problem}; {_reprofile_hint(backend)}")
            clean[key] = {"median_ms": float(entry["median_ms"]), "p90_ms": float(entry["p90_ms"]),
                          "runs": int(entry["runs"])}
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        return cls(device=device, backend=backend, entries=clean, settings=settings, created=data.get("created"))

    @classmethod
    def load(cls, path: str | os.PathLike, force: bool = False, backend: str | None = None) -> "Profile":
        """Read a profile file and check that it was measured on this device (and ``backend``, when given).

        Another device is a UsageError unless ``force`` (then a warning); other library versions on
        this device are a warning.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"profile file {path} does not exist; "
                             f"measure one with: jetvit-compile profile MODEL --target {backend or 'BACKEND'} -o {path}") from None
        except IsADirectoryError:
            raise UsageError(f"profile path {path} is a folder; give the profile's JSON file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"profile file {path} is not valid JSON ({e}); delete it and "
                             f"{_reprofile_hint(backend)}") from None
        profile = cls.from_json(data, where=str(path))
        if backend is not None and profile.backend != backend:
            raise UsageError(f"{path} profiles backend {profile.backend!r}, not {backend!r}; "
                             f"{_reprofile_hint(backend)}")
        profile.check_device(force=force, where=str(path))
        return profile

    def check_device(self, force: bool = False, where: str = "profile") -> None:
        """Refuse (or, with ``force``, warn about) a profile from another device; warn about versions."""
        here = device_fingerprint()
        theirs, mine = self.device_key, device_key(here)
        if theirs != mine:
            message = (f"{where} was measured on {describe(self.device)} ({theirs}), this machine is "
                       f"{describe(here)} ({mine})")
            if not force:
                raise UsageError(f"{message}; re-profile here (jetvit-compile profile MODEL --target {self.backend}) "
                                 "or pass force=True / --force to use it anyway")
            warnings.warn(f"{message}; using it anyway (force)", stacklevel=3)
            return
        diffs = software_differences(self.device, here)
        if diffs:
            warnings.warn(f"{where} was measured on this device with other library versions ({'; '.join(diffs)}); "
                          f"timings may have shifted, {_reprofile_hint(self.backend)} to refresh them", stacklevel=3)


def entry_problem(entry: Any) -> str | None:
    """Why ``entry`` is not a measurement (times finite and >= 0, p90 not under the median, runs >= 1), or None."""
    if not (isinstance(entry, dict) and all(f in entry for f in ENTRY_FIELDS)
            and all(_finite(entry[f]) for f in ENTRY_FIELDS)):
        return f"needs numbers {', '.join(ENTRY_FIELDS)}, finite"
    median, p90, runs = entry["median_ms"], entry["p90_ms"], entry["runs"]
    if median < 0 or p90 < 0:
        return f"a latency cannot be negative (median {median} ms, p90 {p90} ms)"
    if p90 < median:
        return f"p90 {p90} ms is under the median {median} ms, which no measurement gives"
    if runs < 1 or runs != int(runs):
        return f"runs must be a whole number of at least 1, got {runs}"
    return None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def default_profile_path(backend: str, fingerprint: dict[str, Any] | None = None) -> Path:
    """``<cache>/profiles/<device key>-<backend>.json`` (cache: ``$JETVIT_COMPILE_CACHE`` or ~/.cache/jetvit_compile)."""
    from ..images import cache_dir

    return cache_dir("profiles") / f"{device_key(fingerprint)}-{check_backend(backend)}.json"
