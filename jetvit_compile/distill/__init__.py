"""Distillation: learning the new blocks' parameters from the original model.

Stage 1 (:mod:`.attention_transfer`) trains every learned candidate at every site on captured q, k, v
(:mod:`.captures`); its per-choice parameters go into a layout's ``site{i}.{param}`` values.
"""
from .attention_transfer import SiteTransfer, TransferResult, TransferSettings, attention_transfer
from .captures import CaptureStore, capture_fx, capture_onnx

__all__ = ["attention_transfer", "TransferSettings", "TransferResult", "SiteTransfer", "CaptureStore", "capture_fx",
           "capture_onnx"]
