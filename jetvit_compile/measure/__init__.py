"""Measurement, a leaf every stage may use: latency (timing), output fidelity, rows side by side."""
from .fidelity import Fidelity, compare, pearson
from .rows import LayoutResult, layout_table, side_by_side
from .timing import Latency, interleaved, measure

__all__ = ["Fidelity", "compare", "pearson", "Latency", "interleaved", "measure", "LayoutResult", "side_by_side",
           "layout_table"]
