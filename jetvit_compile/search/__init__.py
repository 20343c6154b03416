"""Post-Training Attention Search: capture what the original computes, learn the new blocks' parameters
(attention transfer), measure each site's sensitivity, and search a per-site layout (beam search scored
by the model's real output and the device profile's latency)."""
from .beam import SearchResult, beam_search
from .capture import SiteCapture, capture
from .run import SearchOutcome, default_variants, search
from .sensitivity import Sensitivity, site_sensitivity
from .transfer import transfer

__all__ = ["SiteCapture", "capture", "transfer", "Sensitivity", "site_sensitivity", "SearchResult", "beam_search",
           "SearchOutcome", "search", "default_variants"]
