"""Post-Training Attention Search: capture what the original computes, learn the new blocks' parameters
(attention transfer). The layout search itself is not built yet."""
from .capture import SiteCapture, capture
from .transfer import transfer

__all__ = ["SiteCapture", "capture", "transfer"]
