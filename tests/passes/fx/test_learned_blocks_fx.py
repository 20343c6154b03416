"""The learned blocks through the FX rewrite: each rewritten site computes the reference module with the
layout's parameters (not the init), and parameters that do not fit are refused with the fix."""
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

CHOICES = ["linear:hedgehog", "window:5+pool:3+learned", "window:5+pool:3+route:2+full:1.4+learned:2"]


def _trained_like(choice, site, seed=0):
    """Parameters moved away from the init (as training would), so a rewrite that ignored them would show."""
    torch.manual_seed(seed)
    block = build_attention(parse_choice(choice), site)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return {f"site{site.index}.{k}": v.clone() for k, v in block.state_dict().items()}


@pytest.mark.parametrize("choice", CHOICES)
@pytest.mark.parametrize("name", ["dinov2_s", "dinov3_s"])
def test_learned_site_agrees_with_the_reference_and_uses_the_layouts_parameters(name, choice):
    ep, x = export(name)
    original = ep.module()
    sites = sites_of(original)
    index = 7
    params = _trained_like(choice, sites[index])
    layout = Layout(default=parse_choice("full"), overrides={index: parse_choice(choice)}, params=params)
    gm, summary, new_sites = rewrite_module(ep, layout)
    assert sum(summary.values()) == 1
    seen = {}
    gm.get_submodule(submodule_name(new_sites[index])).register_forward_hook(lambda m, a, out: seen.update(out=out))
    with torch.no_grad():
        gm(x)
        q, k, v = (capture_sites(original, sites, x)[index][key] for key in "qkv")
        reference = build_attention(parse_choice(choice), sites[index], layout.site_params(index))(q, k, v)
        fresh = build_attention(parse_choice(choice), sites[index])(q, k, v)
    err = (seen["out"] - reference).abs().max().item()
    assert err <= 1e-5, err
    assert (seen["out"] - fresh).abs().max().item() > 1e-3, "the layout's parameters were not used"


def test_learned_choices_rewrite_and_export_again():
    ep, x = export("dinov2_s")
    new, summary = jc.rewrite(ep, "linear:hedgehog;window:5+pool:3+learned@2,3;full@5")
    assert summary == {"to_window": 2, "to_linear": 9}
    again = torch.export.export(new.module(), (x,))
    with torch.no_grad():
        assert torch.allclose(first_output(again.module()(x)), first_output(new.module()(x)), atol=1e-6)


def test_parameters_that_do_not_fit_the_site_are_refused():
    ep, _ = export("dinov2_s")
    sites = jc.inspect(ep)
    wrong_heads = dict(sites[3].__dict__, num_heads=12, handles=None)
    from jetvit_compile.sites import AttentionSite

    params = {f"site3.{k}": v for k, v in build_attention(parse_choice("linear:hedgehog"),
                                                          AttentionSite(**wrong_heads)).state_dict().items()}
    layout = Layout(default=parse_choice("full"), overrides={3: parse_choice("linear:hedgehog")}, params=params)
    with pytest.raises(UsageError, match=r"site 3: learned parameters do not fit this site's linear:hedgehog block "
                                         r"\(feature_map.weight is \[2, 1, 12, 64, 64\], the site needs \[2, 1, 6, 64, 64\]"):
        jc.rewrite(ep, layout)
    jetvit = {f"site3.{k}": v for k, v in build_attention(parse_choice("linear:jetvit"), sites[3]).state_dict().items()}
    layout = Layout(default=parse_choice("full"), overrides={3: parse_choice("linear:hedgehog")}, params=jetvit)
    with pytest.raises(UsageError, match=r"missing feature_map.weight"):
        jc.rewrite(ep, layout)
