"""A grid that contradicts the patch convolution is refused; without a convolution the grid is read from the
input size and the token count when only one square patch size fits, and refused when several do."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from jetvit_compile import inspect as jc_inspect
from jetvit_compile.cli import main
from jetvit_compile.errors import UnsupportedModelError, UsageError
from jetvit_compile.sites import grids_from_tokens

from cli_errors import error_line
from models import ConvViT, LinearPatchViT, export, tiny_vit_file


def test_cli_grid_contradicting_the_onnx_patch_conv_is_refused(tmp_path):
    model = tiny_vit_file(tmp_path)  # 32 px, patch 8: the conv makes a 4x4 grid
    line = error_line(CliRunner().invoke(main, ["inspect", str(model), "--grid", "2x2"]), 2)
    assert "2x2" in line and "4x4" in line and "convolution" in line
    assert CliRunner().invoke(main, ["inspect", str(model), "--grid", "4x4"]).exit_code == 0


def test_api_grid_contradicting_the_fx_patch_conv_is_refused():
    ep = export(ConvViT(patch=8), 64)  # 8x8 grid
    with pytest.raises(UsageError, match="contradicts"):
        jc_inspect(ep, grid=(4, 4))
    assert jc_inspect(ep, grid=(8, 8))[0].grid == (8, 8)


def test_grid_without_a_conv_is_read_from_the_input_size_and_tokens():
    sites = jc_inspect(export(LinearPatchViT(patch=8, prefix=1), 64))
    assert (sites[0].grid, sites[0].num_prefix_tokens) == ((8, 8), 1)
    sites = jc_inspect(export(LinearPatchViT(patch=4, prefix=5), 32))  # 8x8 patches, 5 prefix tokens
    assert (sites[0].grid, sites[0].num_prefix_tokens) == ((8, 8), 5)


def test_ambiguous_grid_without_a_conv_is_refused_and_a_given_grid_decides():
    ep = export(LinearPatchViT(patch=16, prefix=1), 32)  # 5 tokens: 2x2 + 1, or 1x1 + 4
    with pytest.raises(UnsupportedModelError, match="several grids") as info:
        jc_inspect(ep)
    assert "2x2" in str(info.value) and "1x1" in str(info.value)
    assert jc_inspect(ep, grid=(2, 2))[0].num_prefix_tokens == 1


def test_a_given_grid_that_leaves_most_tokens_off_the_grid_is_refused():
    ep = export(LinearPatchViT(patch=4, prefix=1), 32)  # 65 tokens, 8x8
    with pytest.raises(UsageError, match="off the grid"):
        jc_inspect(ep, grid=(2, 2))


def test_grids_from_tokens():
    assert grids_from_tokens(197, (224, 224)) == [((14, 14), 1)]
    assert grids_from_tokens(257 + 4, (224, 224)) == [((16, 16), 5)]
    assert grids_from_tokens(197, None) == []
