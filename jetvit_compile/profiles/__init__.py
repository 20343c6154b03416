"""Per-device latency profiles (autotune) of attention block variants, and the cost model the search uses.

    prof = profile_model(ep, backend="onnxruntime")      # or profile_sites(sites, ...)
    prof.save(default_profile_path("onnxruntime"))        # JSON named by device key and backend
    prof = Profile.load(path)                             # refused when measured on another device
    ms = predict(prof, sites, "window:14;full@5,11", base_from_measurement(prof, sites, original_ms))
"""
from __future__ import annotations

from .cost_model import base_from_measurement, block_times, predict, resolve_choices
from .device import device_fingerprint, device_key
from .measure import DEFAULT_VARIANTS, profile_model, profile_sites, profile_to_file, sites_of_model
from .profile import BACKENDS, Profile, default_profile_path, entry_key, site_entry_key

__all__ = [
    "Profile", "profile_sites", "profile_model", "profile_to_file", "sites_of_model", "default_profile_path",
    "device_fingerprint", "device_key", "entry_key", "site_entry_key", "predict", "base_from_measurement",
    "block_times", "resolve_choices", "BACKENDS", "DEFAULT_VARIANTS",
]
