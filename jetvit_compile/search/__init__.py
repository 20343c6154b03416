"""Post-Training Attention Search: capture what the original computes, learn the new blocks' parameters
(attention transfer), measure each site's sensitivity. The layout (beam) search itself is not built yet."""
from .capture import SiteCapture, capture
from .sensitivity import Sensitivity, site_sensitivity
from .transfer import transfer

__all__ = ["SiteCapture", "capture", "transfer", "Sensitivity", "site_sensitivity"]
