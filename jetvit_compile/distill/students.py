"""Students for end-to-end distillation: a model rewritten by a layout, differentiable, with only its new
blocks' parameters trainable, beside its teacher (the original), both returning what fidelity is judged on.

``fx_student`` rewrites a torch.export program (:func:`...passes.fx.program.rewrite_module`); ``onnx_student``
runs an ONNX graph in torch (:mod:`...passes.onnx.to_torch`), since ONNX Runtime gives no gradients. Either
way, a student called on one image ``[1, 3, H, W]`` returns a list of tensors: the model's first output, or
the values of the named taps (the features a task head reads), as the search judges a layout.

The blocks are built for the sites at the student's input size; their parameters do not depend on it
(channel MLPs, per-head maps), so a student built at a lower resolution trains parameters that a layout
then applies at the deploy size.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import onnx_ir as ir
import torch
from torch.utils._pytree import tree_leaves

from ..attention import build_attention
from ..errors import UnsupportedModelError, UsageError
from ..layout import LINEAR_VARIANTS, Choice, Layout, parse_choice
from ..sites import AttentionSite, architecture_fingerprint

from ..passes.taps import expose_onnx_taps, fx_tap_nodes, inside_replaced_attention, record_fx_taps


@dataclasses.dataclass(eq=False)
class Student:
    """A layout's rewrite of one model, ready to train. ``module(x)`` and ``teacher(x)`` return the judged
    tensors of image ``x``; ``blocks`` are the learnable sites' new blocks (inside ``module``)."""

    module: torch.nn.Module
    teacher: torch.nn.Module
    blocks: dict[int, torch.nn.Module]  # site index -> its new block, the only trainable parameters
    layout: Layout
    sites: list[AttentionSite]
    input_size: tuple[int, int]  # (H, W) the student was built for
    taps: tuple[str, ...] = ()

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The trainable parameters, named ``site{i}.<param>`` as a layout stores them, in a fixed order."""
        return [(f"site{i}.{name}", p) for i, block in sorted(self.blocks.items())
                for name, p in block.named_parameters()]

    def params(self) -> dict[str, torch.Tensor]:
        """Every learned value (parameters and the blocks' persistent buffers), on the CPU, for ``Layout(params=)``."""
        return {f"site{i}.{k}": v.detach().cpu().clone() for i, block in sorted(self.blocks.items())
                for k, v in block.state_dict().items()}

    def load_params(self, params: dict[str, torch.Tensor]) -> None:
        """Set the blocks from ``site{i}.<param>`` values; one error listing every value that does not fit."""
        problems = []
        for i, block in sorted(self.blocks.items()):
            prefix = f"site{i}."
            mine = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
            state = block.state_dict()
            missing = sorted(set(state) - set(mine))
            wrong = [f"{k} {tuple(v.shape)} (the block has {tuple(state[k].shape)})" for k, v in mine.items()
                     if k in state and v.shape != state[k].shape]
            if missing or wrong:
                problems.append(f"site {i}: " + "; ".join(filter(None, [
                    f"missing {', '.join(missing)}" if missing else "", f"shapes {', '.join(wrong)}" if wrong else ""])))
                continue
            with torch.no_grad():
                for k, v in state.items():
                    v.copy_(mine[k])
        if problems:
            raise UsageError("the parameters do not fit this model and layout (made for another one?): "
                             + " | ".join(problems))

    def to(self, device: torch.device | str) -> "Student":
        self.module.to(device)
        self.teacher.to(device)
        return self


def fx_student(program: torch.export.ExportedProgram, layout: Layout | str, taps: Sequence[str] | None = None,
               seed: int = 0) -> Student:
    """The student of a torch.export program (exported at the size to train at). New blocks start from the
    layout's parameters where it has them, else from their init under ``seed``."""
    from ..passes.fx.program import example_inputs, rewrite_module, sites_of
    from ..passes.fx.replace_site import submodule_name

    layout = Layout.coerce(layout)
    original = program.module()
    sites = sites_of(original)
    choices = layout.resolve(len(sites), architecture_fingerprint(sites))
    learnable = _learnable_sites(sites, choices, layout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gm, _, sites = rewrite_module(program, layout)
    for p in gm.parameters():  # the original weights are parameters of the GraphModule: freeze them all
        p.requires_grad_(False)
    blocks = {i: gm.get_submodule(submodule_name(sites[i])) for i in learnable}
    for block in blocks.values():
        for p in block.parameters():
            p.requires_grad_(True)
    taps = tuple(taps or ())
    nodes = fx_tap_nodes(original, taps) if taps else []  # looked up in the original, before it is changed
    args = example_inputs(program)[0]
    size = _image_size(tuple(args[0].shape) if len(args) == 1 else (), "the program")
    return Student(_FxJudged(gm, nodes, taps), _FxJudged(original, nodes, taps).requires_grad_(False),
                   blocks, layout, sites, size, taps)


def onnx_student(model: ir.Model, layout: Layout | str, taps: Sequence[str] | None = None,
                 input_shapes: str | dict | None = None, seed: int = 0) -> Student:
    """The student of an ONNX model (not changed: a copy is upgraded, shaped by ``input_shapes`` such as
    ``input_image:1x3x224x224`` to train at that size, and run in torch)."""
    from ..passes.checks import check_all
    from ..passes.onnx.input_shape import set_input_shapes
    from ..passes.onnx.rewrite import sites_of, upgrade_opset
    from ..passes.onnx.to_torch import onnx_to_torch

    layout = Layout.coerce(layout)
    model = upgrade_opset(model.clone())
    if input_shapes:
        set_input_shapes(model, input_shapes)
    inputs = [v for v in model.graph.inputs if v.name not in model.graph.initializers]
    if len(inputs) != 1:
        raise UnsupportedModelError(f"distillation feeds one image input; the model has {[v.name for v in inputs]}")
    dims = tuple(inputs[0].shape or ())
    size = _image_size((1, *dims[1:]) if dims else dims, "the ONNX model")
    taps = tuple(taps or ())
    sites = sites_of(model)  # before the taps become graph outputs: a returned softmax hides its site
    outputs = expose_onnx_taps(model, taps) if taps else [model.graph.outputs[0].name]
    choices = layout.resolve(len(sites), architecture_fingerprint(sites))
    check_all(sites, choices, layout.site_params, warn_untrained=False)  # parameters from another model or layout: one clear error
    learnable = _learnable_sites(sites, choices, layout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        replaced = {s.index: build_attention(c, s, layout.site_params(s.index))
                    for s, c in zip(sites, choices) if c.kind != "full"}
    inside = {v.name for s in sites if s.index in replaced for node in s.handles.nodes for v in node.outputs}
    if lost := [tap for tap, name in zip(taps, outputs) if name in inside]:
        raise inside_replaced_attention(lost)
    module = onnx_to_torch(model, [(sites[i], block) for i, block in replaced.items()], outputs)
    teacher = onnx_to_torch(model, (), outputs)
    return Student(_Listed(module), _Listed(teacher), {i: replaced[i] for i in learnable}, layout, sites, size, taps)


def learned_choice_names(site: AttentionSite) -> list[str]:
    """The choices of the layout grammar whose block has parameters to learn (for messages)."""
    probes = [(f"linear:{v}", f"linear:{v}") for v in LINEAR_VARIANTS]
    probes.append((f"window:{min(site.grid)}+learned", "window:<size>+learned"))  # a learned window correction
    found = []
    for probe, shown in probes:
        try:
            block = build_attention(parse_choice(probe), site)
        except Exception:  # noqa: BLE001 - a choice this version of the grammar does not offer
            continue
        if any(True for _ in block.parameters()):
            found.append(shown)
    return found


def _learnable_sites(sites: list[AttentionSite], choices: list[Choice], layout: Layout) -> list[int]:
    """Indices of the sites whose new block has parameters; a layout with none has nothing to distil."""
    learnable = [s.index for s, c in zip(sites, choices)
                 if c.kind != "full" and any(True for _ in build_attention(c, s).parameters())]
    if not learnable:
        used = ", ".join(sorted({str(c) for c in choices}))
        learned = ", ".join(learned_choice_names(sites[0])) or "none in this version"
        raise UsageError(f"layout {layout} has no learnable sites: its choices ({used}) have no parameters to "
                         f"train; give some sites a learned choice ({learned})")
    return learnable


def _image_size(shape: tuple, where: str) -> tuple[int, int]:
    if len(shape) != 4 or shape[1] != 3 or not all(isinstance(d, int) for d in shape[2:]):
        raise UnsupportedModelError(f"{where}: distillation feeds photos as [1, 3, H, W]; the model's input is "
                                    f"{shape} (give a concrete size, e.g. input_shapes='NAME:1x3x224x224')")
    return int(shape[2]), int(shape[3])


class _Listed(torch.nn.Module):
    """A module returning one tensor or a tuple, returning a list."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.inner(x)
        return [out] if isinstance(out, torch.Tensor) else list(out)


class _FxJudged(torch.nn.Module):
    """A GraphModule returning its first output, or its taps (recorded where the original has them)."""

    def __init__(self, gm: torch.fx.GraphModule, nodes: Sequence[str], taps: Sequence[str]):
        super().__init__()
        self.gm, self.taps = gm, tuple(taps)
        self._store = record_fx_taps(gm, nodes, taps) if taps else None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.gm(x)
        if self._store is None:
            return [next(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))]
        return [self._store[str(i)] for i in range(len(self.taps))]

