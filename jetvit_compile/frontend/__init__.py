"""The model front end: one interface (:class:`ViTModel`) for a torch.export program or an ONNX file."""
from .base import Evaluator, Rewritten, ViTModel
from .open import open_model

__all__ = ["ViTModel", "Rewritten", "Evaluator", "open_model"]
