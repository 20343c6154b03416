import pytest
import torch
from hf_models import export, first_output

import jetvit_compile as jc
from jetvit_compile.attention import build_attention
from jetvit_compile.errors import UsageError
from jetvit_compile.layout import Layout, parse_choice
from jetvit_compile.passes.fx.capture import capture_sites
from jetvit_compile.passes.fx.program import rewrite_module, sites_of
from jetvit_compile.passes.fx.replace_site import submodule_name


def _run(ep, x):
    with torch.no_grad():
        return first_output(ep.module()(x))


def _ops(ep):
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


@pytest.mark.parametrize("name", ["dinov2_s", "dinov2_s_eager", "dinov3_s", "depth_anything_s"])
def test_all_full_layout_is_bit_identical(name):
    ep, x = export(name)
    new, summary = jc.rewrite(ep, "full")
    assert summary == {"to_window": 0, "to_linear": 0}
    assert torch.equal(_run(new, x), _run(ep, x))


@pytest.mark.parametrize("name", ["dinov2_s", "dinov2_s_eager", "dinov3_s", "dinov2_s_reg"])
def test_window_covering_the_grid_equals_full_attention(name):
    ep, x = export(name)
    grid = jc.inspect(ep)[0].grid
    new, summary = jc.rewrite(ep, f"window:{max(grid)}")
    assert summary["to_window"] == 12
    assert "aten.scaled_dot_product_attention.default" in _ops(new)  # windows run through sdpa
    err = (_run(new, x) - _run(ep, x)).abs().max().item()
    assert err <= 1e-5, err


@pytest.mark.parametrize("choice", ["window:5", "window:5+pool:3", "window:5+pool:3+route:2",
                                    "window:5+pool:3+route:2+global:8", "window:4+pool:3+route:2+group:2+global:8",
                                    "window:5+pool:3+route:2+full:1.4", "window:5+cluster:6",
                                    "linear:relu",
                                    "linear:jetvit"])
@pytest.mark.parametrize("name", ["dinov2_s", "dinov3_s"])
def test_each_rewritten_site_agrees_with_the_reference(name, choice):
    """Swap one site at a time; the new block sees the original q, k, v and computes attention/'s maths."""
    ep, x = export(name)
    original = ep.module()
    sites = sites_of(original)
    captured = capture_sites(original, sites, x)
    for index in (0, 7):
        gm, summary, new_sites = rewrite_module(ep, f"full;{choice}@{index}")
        assert sum(summary.values()) == 1
        seen = {}
        block = gm.get_submodule(submodule_name(new_sites[index]))
        block.register_forward_hook(lambda m, args, out: seen.update(args=args, out=out))
        with torch.no_grad():
            gm(x)
        q, k, v = (captured[index][key] for key in "qkv")
        for got, want in zip(seen["args"], (q, k, v)):
            assert torch.allclose(got, want, atol=1e-6)
        reference = build_attention(parse_choice(choice), sites[index])
        err = (seen["out"] - reference(q, k, v)).abs().max().item()
        assert err <= 1e-5, f"site {index}: {err}"


def test_rewrite_changes_the_graph_and_exports_again():
    ep, x = export("dinov2_s")
    new, summary = jc.rewrite(ep, "linear:relu;full@5,11")
    assert summary == {"to_window": 0, "to_linear": 10}
    sdpa = [n for n in new.graph.nodes if n.target == torch.ops.aten.scaled_dot_product_attention.default]
    assert len(sdpa) == 2
    again = torch.export.export(new.module(), (x,))
    assert torch.allclose(_run(again, x), _run(new, x), atol=1e-6)
    assert len(jc.inspect(new)) == 2, "the two full blocks are still attention sites"


def test_non_square_input_and_grid_not_divisible_by_window():
    ep, x = export("dinov2_tiny", 518, 1036)  # 37 x 74 patches; 14 divides neither
    new, summary = jc.rewrite(ep, "window:14")
    assert summary["to_window"] == 2
    out = _run(new, x)
    assert out.shape == (1, 1 + 37 * 74, 384) and torch.isfinite(out).all()
    covering, _ = jc.rewrite(ep, "window:74")
    assert (_run(covering, x) - _run(ep, x)).abs().max().item() <= 1e-5


def test_jetvit_parameters_from_layout_are_used():
    ep, x = export("dinov2_s")
    sites = jc.inspect(ep)
    block = build_attention(parse_choice("linear:jetvit"), sites[3])
    torch.nn.init.normal_(block.conv.kernel_mlp[2].weight, std=0.1)
    params = {f"site3.{k}": v for k, v in block.state_dict().items()}
    plain, _ = jc.rewrite(ep, "full;linear:jetvit@3")
    learned, _ = jc.rewrite(ep, Layout(default=parse_choice("full"), overrides={3: parse_choice("linear:jetvit")}, params=params))
    assert not torch.allclose(_run(plain, x), _run(learned, x), atol=1e-4)


@pytest.mark.parametrize(
    "layout,message",
    [
        ("full,full,full", "layout has 3 choices but the model has 12 attention sites"),
        ("window:fourteen", "unknown attention choice"),
        ("linear:softmax", "unknown attention choice"),
        ("window:40", "window 40 is larger than the 16x16 patch grid"),
        ("full;window:4@12", "overrides sites [12]"),
    ],
)
def test_bad_layouts_are_refused_with_the_fix(layout, message):
    ep, _ = export("dinov2_s")
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        jc.rewrite(ep, layout)


def test_every_problem_is_listed_at_once():
    ep, _ = export("dinov2_s")
    with pytest.raises(UsageError) as err:
        jc.rewrite(ep, "window:99")
    assert "sites 0-11: window 99 is larger than" in str(err.value)


def test_rewrites_from_one_program_model_start_fresh_and_share_the_weights():
    """The search rewrites one program once per layout from copies of a single unlifted module: each copy
    must equal a rewrite from scratch, leave the module it came from as it was, and not copy the weights."""
    from jetvit_compile.frontend import open_model
    from jetvit_compile.passes.fx.program import fresh_copy

    ep, x = export("dinov2_s")
    model = open_model(ep)
    nodes = len(model._unlifted.graph.nodes)
    with torch.no_grad():
        for layout in ["window:5+pool:3", "linear:relu", "window:5+pool:3"]:
            got = first_output(model.module(Layout.coerce(layout))(x))
            assert torch.equal(got, first_output(rewrite_module(ep, layout)[0](x))), layout
        assert torch.equal(first_output(model._unlifted(x)), _run(ep, x))
    assert len(model._unlifted.graph.nodes) == nodes
    copy = fresh_copy(model._unlifted)
    assert copy.graph is not model._unlifted.graph
    assert {p.data_ptr() for p in copy.parameters()} == {p.data_ptr() for p in model._unlifted.parameters()}
