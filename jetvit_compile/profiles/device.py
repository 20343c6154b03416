"""Which machine a latency profile was measured on.

``device_fingerprint()`` records the hardware (GPU name and compute capability when torch sees CUDA,
always the CPU model, core count and architecture) and the software that produced the numbers (torch,
onnxruntime, CUDA, driver, Python). ``device_key()`` is a short stable id built from the hardware fields
only: the same machine after a library upgrade keeps its key (the version change is a warning, see
:func:`software_differences`), another CPU or GPU gets another key.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from .._onnxruntime import installed

# the fields of a fingerprint that name the hardware; everything else is software and only warned about
_HARDWARE = {"cpu": ("model", "cores", "arch"), "gpu": ("name", "compute_capability")}
_SOFTWARE = ("torch", "onnxruntime", "cuda", "driver")


def _cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        try:
            lines = info.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        fields: dict[str, str] = {}
        for line in lines:
            if ":" in line:
                k, v = (x.strip() for x in line.split(":", 1))
                fields.setdefault(k, v)
        # x86: "model name"; ARM kernels: "Hardware" / "CPU implementer"+"CPU part"
        for name in ("model name", "Hardware", "cpu model", "Processor"):
            if fields.get(name):
                return fields[name]
        if fields.get("CPU implementer"):
            return f"arm-{fields['CPU implementer']}-{fields.get('CPU part', '')}".rstrip("-")
    return platform.processor() or platform.machine() or "unknown-cpu"


def _cores() -> int:
    """CPUs this process may run on (a container's share), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _driver_version() -> str | None:
    try:  # pynvml / nvidia-ml-py, when installed
        import pynvml

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:  # noqa: BLE001 - optional library, any failure means "not known this way"
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return out.strip().splitlines()[0].strip() or None
    except Exception:  # noqa: BLE001 - no nvidia-smi, or it failed
        return None


def _ort_version() -> str | None:
    ort = installed()
    return ort.__version__ if ort else None


@functools.lru_cache(maxsize=1)
def _fingerprint() -> str:
    import torch

    cpu = {"model": _cpu_model(), "cores": _cores(), "arch": platform.machine()}
    gpu = None
    software: dict[str, Any] = {
        "torch": torch.__version__,
        "onnxruntime": _ort_version(),
        "cuda": None,
        "driver": None,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1),
        }
        software["cuda"] = torch.version.cuda
        software["driver"] = _driver_version()
    return json.dumps({"cpu": cpu, "gpu": gpu, "software": software})


def device_fingerprint() -> dict[str, Any]:
    """What this machine is: ``{"cpu": {...}, "gpu": {...} | None, "software": {...}}`` (a fresh dict)."""
    return json.loads(_fingerprint())


def _slug(text: str, words: int = 4) -> str:
    t = re.sub(r"\((r|tm|c)\)", " ", text.lower())
    t = re.sub(r"@.*$", " ", t)  # clock speed
    t = re.sub(r"\b(\d+-core|processor|cpu|with|radeon graphics)\b", " ", t)
    parts = re.findall(r"[a-z0-9]+", t)
    return "-".join(parts[:words]) or "unknown"


def hardware(fp: dict[str, Any]) -> dict[str, Any]:
    """The hardware fields of a fingerprint (what makes it another device)."""
    out: dict[str, Any] = {}
    for section, names in _HARDWARE.items():
        values = fp.get(section) or None
        out[section] = None if values is None else {n: values.get(n) for n in names}
    return out


def device_key(fp: dict[str, Any] | None = None) -> str:
    """A short stable id such as ``cpu-amd-epyc-2c-1a2b3c4d`` or ``cuda-nvidia-h100-80gb-hbm3-sm90-…``.

    Built from the hardware fields only; the hash covers all of them (so the same GPU beside another
    CPU is another device), the readable part names the main one.
    """
    fp = device_fingerprint() if fp is None else fp
    hw = hardware(fp)
    digest = hashlib.sha256(json.dumps(hw, sort_keys=True).encode()).hexdigest()[:8]
    if hw["gpu"]:
        cc = str(hw["gpu"].get("compute_capability") or "").replace(".", "")
        return f"cuda-{_slug(str(hw['gpu'].get('name')))}-sm{cc}-{digest}"
    cpu = hw["cpu"] or {}
    return f"cpu-{_slug(str(cpu.get('model')))}-{cpu.get('cores')}c-{digest}"


def describe(fp: dict[str, Any]) -> str:
    """One line for messages: ``AMD EPYC (2 cores)`` or ``NVIDIA H100 (sm 9.0) + AMD EPYC (16 cores)``."""
    cpu = fp.get("cpu") or {}
    text = f"{cpu.get('model')} ({cpu.get('cores')} cores)"
    gpu = fp.get("gpu")
    if gpu:
        text = f"{gpu.get('name')} (sm {gpu.get('compute_capability')}) + {text}"
    return text


def software_differences(recorded: dict[str, Any], current: dict[str, Any] | None = None) -> list[str]:
    """Library versions that differ between a recorded fingerprint and this machine, as readable strings."""
    current = device_fingerprint() if current is None else current
    was, now = recorded.get("software") or {}, current.get("software") or {}
    return [f"{name} {was.get(name)} -> {now.get(name)}" for name in _SOFTWARE if was.get(name) != now.get(name)]
