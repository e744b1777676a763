"""Swap a model's norm layers for normgen's modules: a drop-in for Hugging Face models.

    import torch
    from dsl.hf import swap_norms

    report = swap_norms(model)   # in place; returns what it replaced and what it left alone
    print(report)
    with torch.inference_mode():
        logits = model(input_ids).logits

Any ``nn.Module`` tree works; transformers is never imported. A layer is
recognized by what it computes, not by its name alone:

* Every module whose class name contains ``Norm`` is a candidate; everything
  else is ignored. A candidate that is not replaced is reported with the reason.
* An RMSNorm candidate must look like one: no submodules or buffers, exactly one
  parameter, a 1-D float ``weight``, and its epsilon in ``variance_epsilon``
  (Llama's name) or ``eps`` (Gemma's). It is then *probed*: its own forward runs
  on CPU (``torch.func.functional_call``, so its parameters are not touched) on
  fixed random rows in float32, bfloat16 and float16, one of them small enough
  that eps matters, with a random weight, and its outputs must be bit-identical
  to the generated reference of ``rmsnorm`` (Llama's rounding: x_hat rounded to
  the input dtype, then times w) or of ``gemma_rmsnorm`` (Gemma's: x_hat * (1 + w)
  in fp32, one rounding). That covers ``LlamaRMSNorm`` and its many copies
  (``MistralRMSNorm``, ``Qwen2RMSNorm``, ``Qwen3RMSNorm`` including Qwen3's
  per-head ``q_norm``/``k_norm``, ...) and ``GemmaRMSNorm``/``Gemma2RMSNorm``/
  ``Gemma3RMSNorm``. Classes that round differently (e.g. ``Olmo2RMSNorm``:
  w * x_hat in fp32, then one rounding, with no offset) or that have no weight
  are left alone.
* ``torch.nn.LayerNorm`` (and subclasses that keep its forward) over one
  trailing dimension, with a weight and with or without a bias, becomes
  ``generated.LayerNorm``. torch's kernel reduces in another order than
  normgen's, so the probe asks for torch's default ``assert_close`` tolerances
  rather than bit-identity; ``elementwise_affine=False`` is left alone (normgen
  has no weightless layer norm).
* A module with hooks (forward ones such as accelerate's offloading hooks,
  backward or state_dict ones) is left alone: a swap would drop them. So is one
  whose forward takes more than its input (a gated norm's ``gate``): the probe
  calls it with the input alone, and the model may pass more.

The probe runs on CPU, where the swapped layers run the same generated
reference; on CUDA and NPU tensors they run normgen's Triton kernels, which sum
the row in their own order, so there the outputs can differ from the original
layer's in the last bit (``Replaced.bit_identical`` describes the CPU probe).

The new modules hold the *same* ``Parameter`` objects (same dtype, device and
state_dict keys; tied or shared parameters stay tied) and the same eps, and
keep the old module's training flag. A module that appears under several names
is replaced by one new module everywhere.

The swapped model trains: the new norms are differentiable and hold the
original parameters (one training step gives the original model's gradients:
tests/test_hf.py).

Mixed dtypes: normgen's ops take an fp32 weight (and bias) with fp16 or bf16
input and return the input's dtype. The probe runs each recognized layer on
half-precision rows with fp32 parameters too: where the layer returns what normgen
does (Gemma's norms: fp32 math, cast back to the input's dtype), the swapped
module takes such calls. Where it does not (``LlamaRMSNorm`` and its copies
compute ``weight * x_hat`` and return fp32 for an fp32 weight; normgen's y keeps
the input's dtype), the swapped module runs the replaced layer's own forward
(with the swapped module's parameters) for calls whose input dtype differs from
its weight's, so the dtypes flowing through the model do not change. Every
swapped module does so for dtypes normgen does not take (Mamba's final norm gets
fp32 rows with a bf16 weight: it returns fp32 as before).

Limits (for now):

* Swap before ``torch.compile``: the swapped modules' ops are custom ops that
  torch.compile records (graph breaks elsewhere in the model are the model's own).
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from collections.abc import Callable
from typing import NamedTuple

import torch

from .checks import EPS_RULE, eps_value

__all__ = ["Replaced", "Skipped", "SwapReport", "swap_norms"]

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# torch.testing.assert_close's default tolerances (rtol, atol): the bar for layer norm
_CLOSE = {torch.float32: (1.3e-6, 1e-5), torch.bfloat16: (1.6e-2, 1e-5), torch.float16: (1e-3, 1e-5)}
_EPS_ATTRS = ("variance_epsilon", "eps")


class Replaced(NamedTuple):
    """A norm layer that ``swap_norms`` replaced."""

    name: str  # qualified module name in the model, e.g. "model.layers.0.self_attn.q_norm"
    old: str  # its class name, e.g. "Qwen3RMSNorm"
    new: str  # the normgen module class, e.g. "RMSNorm"
    bit_identical: bool  # its probe outputs were bit-identical to normgen's in every dtype


class Skipped(NamedTuple):
    """A norm-like layer that ``swap_norms`` left alone, and why."""

    name: str
    old: str
    reason: str


@dataclasses.dataclass
class SwapReport:
    """What ``swap_norms`` did: the layers it replaced and the norm-like layers it left alone."""

    replaced: list[Replaced] = dataclasses.field(default_factory=list)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"normgen replaced {len(self.replaced)} norm layer(s), left {len(self.skipped)} alone"]
        for r in self.replaced:
            exact = "" if r.bit_identical else " (within torch's default tolerances, not bit-identical)"
            lines.append(f"  {r.name}: {r.old} -> {r.new}{exact}")
        for s in self.skipped:
            lines.append(f"  {s.name or '(the model)'}: {s.old} left alone: {s.reason}")
        return "\n".join(lines)


class _Kind(NamedTuple):
    """A normgen module a layer can become, and how its probe is judged."""

    module: str  # class name in the generated package
    op: str  # op name, for messages
    reference: Callable  # (x, weight, bias, eps) -> y: the generated reference's rounding steps
    exact: bool  # the probe must be bit-identical (else within torch's default tolerances)


def _kinds() -> dict[str, _Kind]:
    from generated.gemma_rmsnorm_reference import gemma_rmsnorm_reference
    from generated.layernorm_reference import layernorm_reference
    from generated.rmsnorm_reference import rmsnorm_reference

    return {
        "rms": _Kind("RMSNorm", "rmsnorm", lambda x, w, b, eps: rmsnorm_reference(x, w, eps)[0], True),
        "gemma": _Kind(
            "GemmaRMSNorm", "gemma_rmsnorm", lambda x, w, b, eps: gemma_rmsnorm_reference(x, w, eps)[0], True
        ),
        "layer": _Kind("LayerNorm", "layernorm", lambda x, w, b, eps: layernorm_reference(x, w, b, eps)[0], False),
    }


def swap_norms(model: torch.nn.Module) -> SwapReport:
    """Replace the norm layers of ``model`` in place with normgen modules; return what was done.

    Recognized layers (see the module docstring for how they are recognized)
    become ``generated.RMSNorm``, ``generated.GemmaRMSNorm`` or
    ``generated.LayerNorm`` holding the same parameters and eps. Norm-like
    layers that normgen cannot compute exactly as they do are left alone and
    listed in ``report.skipped`` with the reason. The model is changed only
    after every layer has been examined. The model can be used for inference
    and for training (the swapped norms have a backward).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"swap_norms takes an nn.Module, got {type(model).__name__}")
    import generated

    kinds = _kinds()
    normgen_classes = tuple(getattr(generated, kind.module) for kind in kinds.values())
    report = SwapReport()
    new_for: dict[int, torch.nn.Module] = {}  # id(old module) -> its replacement
    for name, module in model.named_modules():
        old = type(module).__name__
        if "Norm" not in old:
            continue
        if module is model:
            match = "the model itself is the norm layer; swap_norms replaces submodules"
        elif isinstance(module, normgen_classes):
            match = "it is a normgen module already"
        else:
            match = _recognize(module, kinds)
        if isinstance(match, str):
            report.skipped.append(Skipped(name, old, match))
            continue
        new_for[id(module)] = _build(module, getattr(generated, match.kind.module), match.eps)
        new_for[id(module)].dtype_rule = _OwnForOtherDtypes(module, match.mixed)
        report.replaced.append(Replaced(name, old, match.kind.module, match.bit_identical))
    for parent in list(model.modules()):
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in new_for:
                setattr(parent, child_name, new_for[id(child)])
    return report


class _Match(NamedTuple):
    kind: _Kind
    eps: float
    bit_identical: bool
    mixed: bool  # it computes what normgen does with fp32 parameters and half input


class _OwnForOtherDtypes:
    """A swapped module's ``dtype_rule`` (dsl/modules.py): a call whose dtypes the probe did not find
    normgen computing as the replaced layer does runs the replaced layer's own forward, with the
    swapped module's parameters, and returns what it returns; other calls return None (normgen serves
    them). ``mixed``: the probe found half-precision input with fp32 parameters computed alike (Gemma's
    norms, nn.LayerNorm; not LlamaRMSNorm, which returns fp32 there); calls of one dtype always are."""

    def __init__(self, original: torch.nn.Module, mixed: bool):
        self.original = original  # (a plain attribute: not in the model's modules or state_dict)
        self.mixed = mixed

    def __call__(self, module, x):
        if not isinstance(x, torch.Tensor):
            return None
        weight = module.weight.dtype
        if x.dtype == weight or self.mixed and weight == torch.float32 and x.dtype in _DTYPES[1:]:
            return None
        params = {"weight": module.weight}
        if getattr(module, "bias", None) is not None:
            params["bias"] = module.bias
        return torch.func.functional_call(self.original, params, (x,))


def _recognize(module: torch.nn.Module, kinds: dict[str, _Kind]) -> _Match | str:
    """How normgen computes this layer exactly as it does, or the reason it cannot."""
    if module._forward_hooks or module._forward_pre_hooks or hasattr(module, "_hf_hook"):
        return "it has forward hooks (a swap would drop them)"
    hooks = [kind for kind in _HOOKS if getattr(module, f"_{kind}_hooks", None)]
    if hooks:
        return f"it has {', '.join(k.replace('_', ' ') for k in hooks)} hooks (a swap would drop them)"
    if (extra := _extra_inputs(type(module).forward)) is not None:
        return f"its forward takes {extra} besides the input (a model may pass it; normgen's takes the input alone)"
    if next(module.children(), None) is not None:
        return "it has submodules"
    if next(module.buffers(recurse=False), None) is not None:
        return "it has buffers"
    params = dict(module.named_parameters(recurse=False))
    if isinstance(module, torch.nn.LayerNorm) and type(module).forward is torch.nn.LayerNorm.forward:
        if len(module.normalized_shape) != 1:
            return f"it normalizes over {len(module.normalized_shape)} trailing dimensions (normgen: the last)"
        if "weight" not in params:
            return "elementwise_affine=False: normgen's layernorm needs a weight"
        candidates, eps = [kinds["layer"]], module.eps
    else:
        if "weight" not in params:
            return "it has no `weight` parameter (no normgen op for it)"
        if set(params) != {"weight"}:
            return f"it has parameters {', '.join(sorted(params))} (an RMSNorm has only `weight`)"
        eps_values = {a: getattr(module, a) for a in _EPS_ATTRS if hasattr(module, a)}
        numbers_only = {a: v for a, v in eps_values.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}
        if not numbers_only:
            found = ", ".join(f"{a}={v!r}" for a, v in eps_values.items()) or "neither attribute"
            return f"no numeric eps in `variance_epsilon` or `eps` ({found})"
        if len(set(numbers_only.values())) > 1:
            return f"ambiguous eps: {numbers_only}"
        candidates, eps = [kinds["rms"], kinds["gemma"]], next(iter(numbers_only.values()))
    weight = params["weight"]
    if weight.dim() != 1 or weight.dtype not in _DTYPES:
        return f"its weight is {tuple(weight.shape)} {weight.dtype} (normgen: 1-D float32, float16 or bfloat16)"
    eps, wrong = eps_value(eps)
    if eps is None:
        return f"eps {wrong} (normgen: {EPS_RULE})"
    misses = []
    for kind in candidates:
        miss, exact = _probe(module, kind, weight.shape[0], eps, params.get("bias") is not None)
        if miss is None:
            mixed = _probe(module, kind, weight.shape[0], eps, params.get("bias") is not None, True)[0]
            return _Match(kind, eps, exact, mixed is None)
        misses.append(f"normgen's {kind.op} ({miss})")
    if len(misses) == 1:
        return f"it differs from {misses[0]}"
    return "it computes neither " + " nor ".join(misses)


_HOOKS = ("backward", "backward_pre", "state_dict", "state_dict_pre", "load_state_dict_pre", "load_state_dict_post")


def _extra_inputs(forward) -> str | None:
    """What a forward takes beyond self and one input (e.g. a gated norm's ``gate``), or None."""
    try:
        params = list(inspect.signature(forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return "arguments it does not show"
    extra = [p.name for p in params[1:]]
    if params and params[0].kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        extra.insert(0, params[0].name)
    return ", ".join(f"`{name}`" for name in extra) or None


def _probe(
    module: torch.nn.Module, kind: _Kind, n: int, eps: float, has_bias: bool, mixed: bool = False
) -> tuple[str | None, bool]:
    """Run the module's forward and the kind's reference on the same rows: (None, bit_identical) or (why not, False).
    ``mixed``: bfloat16 and float16 rows with float32 parameters (else each dtype's rows with its parameters).

    The rows are fixed random numbers at four scales (one small enough that eps
    matters, one with a large mean), the weight and bias random: a weight of ones
    or zeros would hide an offset convention. They come as (2, 2, n), not (4, n):
    a layer that normalizes another dimension than the last (channels first, over
    dimension 1) then gives other numbers or fails, where on 2-D rows dimension 1
    is the last.
    """
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([[1.0], [1e-3], [30.0], [0.1]])
    shift = torch.tensor([[0.0], [0.0], [0.0], [3.0]])
    x32 = (torch.randn(4, n, generator=gen) * scale + shift).view(2, 2, n)
    w32 = torch.randn(n, generator=gen)
    b32 = torch.randn(n, generator=gen)
    bit_identical = True
    for dtype in _DTYPES[1:] if mixed else _DTYPES:
        x, params = x32.to(dtype), {"weight": w32 if mixed else w32.to(dtype)}
        if has_bias:
            params["bias"] = b32 if mixed else b32.to(dtype)
        try:
            with torch.no_grad():
                want = torch.func.functional_call(module, params, (x,))
        except Exception as error:  # the layer's own code, run on a probe: any failure means "not this kind"
            return f"its forward fails on a {_short(dtype)} probe: {type(error).__name__}: {error}", False
        if not isinstance(want, torch.Tensor) or want.shape != x.shape or want.dtype != dtype:
            what = f"{want.dtype} {tuple(want.shape)}" if isinstance(want, torch.Tensor) else type(want).__name__
            return f"it returns {what} for {_short(dtype)} {tuple(x.shape)} input", False
        got = kind.reference(x, params["weight"], params.get("bias"), eps)
        if torch.equal(want, got):
            continue
        bit_identical = False
        diff = (want.double() - got.double()).abs().max().item()
        rtol, atol = _CLOSE[dtype]
        if kind.exact or not torch.allclose(want, got, rtol=rtol, atol=atol):
            return f"max |diff| {diff:.3g} on a {_short(dtype)} probe", False
    return None, bit_identical


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _build(old: torch.nn.Module, cls: type[torch.nn.Module], eps: float) -> torch.nn.Module:
    """The normgen module for ``old``, holding old's Parameter objects and eps."""
    weight = old.weight
    kwargs = {"bias": old.bias is not None} if isinstance(old, torch.nn.LayerNorm) else {}
    # built on the meta device, so that no storage is allocated for parameters replaced at once
    new = cls(weight.shape[0], eps, device="meta", dtype=weight.dtype, **kwargs)
    new.weight = weight
    if kwargs.get("bias"):
        new.bias = old.bias
    new.train(old.training)
    return new
