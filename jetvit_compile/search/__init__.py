"""Post-Training Attention Search: per-site sensitivity, and a per-site layout found by beam search scored by
the model's real output and the device profile's latency (the settings, the runner, its outcome, the report)."""
from .beam import SearchResult, beam_search
from .keep_full_scan import KeepFullScan, keep_full_scan
from .outcome import SearchOutcome
from .run import default_variants, search
from .settings import SearchSettings

__all__ = ["KeepFullScan", "keep_full_scan", "SearchResult", "beam_search",
           "SearchOutcome", "SearchSettings", "search", "default_variants"]
