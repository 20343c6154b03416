"""jetvit_compile: make pre-trained Vision Transformers fast at high resolution without losing what they compute."""
from . import search as _search_package  # noqa: F401 - first, so the function below keeps the name
from .api import inspect, profile, rewrite, search
from .compile import compile
from .errors import JetViTError, RewriteError, UnsupportedModelError, UsageError, VerificationError
from .layout import Choice, Layout
from .profiles import Profile
from .sites import AttentionSite

__all__ = [
    "inspect", "rewrite", "compile", "profile", "search", "Profile", "Layout", "Choice", "AttentionSite",
    "JetViTError", "UsageError", "UnsupportedModelError", "RewriteError", "VerificationError",
]
__version__ = "0.1.0"
