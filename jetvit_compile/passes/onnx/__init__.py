"""ONNX passes: find attention sites (and, later, rewrite them) in ONNX IR graphs."""
from .find_attention import (
    FORM_ATTENTION,
    FORM_MATMUL_SOFTMAX,
    FORM_MHA,
    FORM_MS_ATTENTION,
    OnnxAttentionHandles,
    find_attention,
)
from .input_shape import make_hw_symbolic, parse_input_shapes, set_input_shapes

__all__ = [
    "FORM_ATTENTION",
    "FORM_MATMUL_SOFTMAX",
    "FORM_MHA",
    "FORM_MS_ATTENTION",
    "OnnxAttentionHandles",
    "find_attention",
    "make_hw_symbolic",
    "parse_input_shapes",
    "set_input_shapes",
]
