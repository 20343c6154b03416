"""Real architectures from Hugging Face transformers, random weights (no hub access), exported once per session."""
from __future__ import annotations

import functools

import torch
from transformers import (
    DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, Dinov2Model,
    Dinov2WithRegistersConfig, Dinov2WithRegistersModel, DINOv3ViTConfig, DINOv3ViTModel,
)

VIT_S = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)
VIT_B = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def _seeded(build):
    torch.manual_seed(0)
    return build().eval()


@functools.lru_cache(maxsize=None)
def build(name: str) -> torch.nn.Module:
    if name == "dinov2_s":
        return _seeded(lambda: Dinov2Model(Dinov2Config(**VIT_S, image_size=518, patch_size=14)))
    if name == "dinov2_s_eager":
        cfg = Dinov2Config(**VIT_S, image_size=518, patch_size=14, attn_implementation="eager")
        return _seeded(lambda: Dinov2Model(cfg))
    if name == "dinov2_b":
        return _seeded(lambda: Dinov2Model(Dinov2Config(**VIT_B, image_size=518, patch_size=14)))
    if name == "dinov2_s_reg":
        cfg = Dinov2WithRegistersConfig(**VIT_S, image_size=518, patch_size=14, num_register_tokens=4)
        return _seeded(lambda: Dinov2WithRegistersModel(cfg))
    if name == "dinov2_tiny":  # 2 blocks, for large inputs
        cfg = Dinov2Config(**{**VIT_S, "num_hidden_layers": 2}, image_size=518, patch_size=14)
        return _seeded(lambda: Dinov2Model(cfg))
    if name == "dinov3_s":
        cfg = DINOv3ViTConfig(**VIT_S, patch_size=16, num_register_tokens=4)
        return _seeded(lambda: DINOv3ViTModel(cfg))
    if name == "depth_anything_s":
        backbone = Dinov2Config(**VIT_S, image_size=518, patch_size=14, out_indices=[3, 6, 9, 12],
                                reshape_hidden_states=False)
        cfg = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[48, 96, 192, 384],
                                  fusion_hidden_size=64, reassemble_hidden_size=384)
        return _seeded(lambda: DepthAnythingForDepthEstimation(cfg))
    raise KeyError(name)


@functools.lru_cache(maxsize=None)
def export(name: str, height: int = 224, width: int = 224) -> tuple[torch.export.ExportedProgram, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(1, 3, height, width)
    with torch.no_grad():
        return torch.export.export(build(name), (x,)), x


def first_output(out) -> torch.Tensor:
    """The main tensor of a transformers output (last_hidden_state / predicted_depth)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if hasattr(out, "predicted_depth"):
        return out.predicted_depth
    return out[0]


