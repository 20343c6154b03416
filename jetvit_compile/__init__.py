"""jetvit_compile: make pre-trained Vision Transformers fast at high resolution without losing what they compute."""
from .api import compile, distill, inspect, profile, rewrite, search
from .distill.distill_layout import DistillSettings
from .errors import JetViTError, RewriteError, UnsupportedModelError, UsageError, VerificationError
from .frontend import ViTModel, open_model
from .layout import Choice, Layout
from .profiles import Profile
from .search.settings import SearchSettings
from .sites import AttentionSite

__all__ = [
    "inspect", "rewrite", "compile", "profile", "search", "distill", "open_model", "ViTModel", "SearchSettings",
    "DistillSettings", "Profile",
    "Layout", "Choice", "AttentionSite",
    "JetViTError", "UsageError", "UnsupportedModelError", "RewriteError", "VerificationError",
]
__version__ = "0.1.0"
