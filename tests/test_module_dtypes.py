"""Modules like torch's norm layers: device= and dtype= make the parameters; a dtype mismatch says how to fix it."""

from __future__ import annotations

import pytest
import torch

import generated
from dsl import checks, runtime
from dsl.names import module_class

from .cases import SPECS, call

WEIGHTED = sorted(name for name, spec in SPECS.items() if spec.has_weight)


@pytest.fixture(autouse=True)
def no_grad():
    """The modules' parameters require grad, and the ops have no backward yet: inference only."""
    with torch.no_grad():
        yield


def build(name, **kwargs):
    return getattr(generated, module_class(SPECS[name]))(64, **kwargs)


def inputs(spec, dtype):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 64, generator=generator).to(dtype)
    return [x] + ([torch.randn(3, 64, generator=generator).to(dtype)] if spec.has_residual else [])


@pytest.mark.parametrize("name", WEIGHTED)
def test_dtype_and_device_make_the_parameters_and_the_output(name):
    spec = SPECS[name]
    module = build(name, dtype=torch.bfloat16, device="cpu")
    params = dict(module.named_parameters())
    assert set(params) == {"weight"} | ({"bias"} if spec.has_bias else set())
    for param in params.values():
        assert param.dtype is torch.bfloat16 and param.device == torch.device("cpu")
    args = inputs(spec, torch.bfloat16)
    out = module(*args)
    outputs = out if isinstance(out, tuple) else (out,)
    # y in bf16; a quantized op's y is q, and its residual out (the sum or the unquantized y) is bf16
    assert outputs[1 if spec.is_quantized else 0].dtype is torch.bfloat16
    # the same as the op called with the module's parameters
    expected = call(
        spec,
        {"x": args[0], **({"residual": args[1]} if spec.has_residual else {}), **params},
        norm_pos=spec.residual[0].value if spec.has_residual else None,
        stats=False,
    )
    for got, want in zip(outputs, expected.values(), strict=True):
        assert torch.equal(got, want)
    assert build(name, device="meta").weight.is_meta


@pytest.mark.parametrize("name", ["rmsnorm", "add_layernorm", "gemma_add_rmsnorm"])
def test_default_dtype_module_runs_bf16_input_with_fp32_parameters(name, cpu_path):
    """Mixed precision: a module built without dtype= (fp32 parameters) takes bf16 input and returns bf16,
    the op's result with those fp32 parameters; it trains, and its parameters' gradients are fp32."""
    spec = SPECS[name]
    module = build(name)
    assert module.weight.dtype is torch.get_default_dtype() is torch.float32
    args = inputs(spec, torch.bfloat16)
    torch.nn.init.normal_(module.weight)
    out = module(*args)
    assert (out[0] if isinstance(out, tuple) else out).dtype is torch.bfloat16
    params = dict(module.named_parameters())
    norm_pos = spec.residual[0].value if spec.has_residual else None
    expected = call(
        spec, {"x": args[0], **dict(zip(["residual"], args[1:], strict=False)), **params}, norm_pos, stats=False
    )
    for got, want in zip(out if isinstance(out, tuple) else (out,), expected.values(), strict=True):
        assert torch.equal(got, want)
    with torch.enable_grad():
        out = module(*[a.requires_grad_() for a in args])
        (out[0] if isinstance(out, tuple) else out).float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype is torch.float32 for p in module.parameters())
    assert args[0].grad.dtype is torch.bfloat16


@pytest.mark.parametrize("name", ["rmsnorm", "add_layernorm"])
def test_refused_parameter_dtypes_say_how_to_fix_it(name):
    spec = SPECS[name]
    args = inputs(spec, torch.bfloat16)
    with pytest.raises(
        runtime.NormgenError, match=r"weight \(.*float16.*\) must have x's dtype \(torch.bfloat16\) or "
    ):
        build(name, dtype=torch.float16)(*args)  # fp16 weights with bf16 x: another 16-bit dtype
    torch.set_default_dtype(torch.float64)
    try:
        module = build(name)
        with pytest.raises(runtime.NormgenError, match=r"weight \(.*\) must have x's dtype") as error:
            module(*args)
    finally:
        torch.set_default_dtype(torch.float32)
    fix = (
        "a normgen module built without dtype= has torch.float64 parameters: "
        "build it with dtype=torch.bfloat16 or call module.to(torch.bfloat16)"
    )
    assert fix in str(error.value)
    out = module.to(torch.bfloat16)(*args)  # the fix the message names works
    assert (out[0] if isinstance(out, tuple) else out).dtype is torch.bfloat16
    if spec.has_bias:  # the bias shares the weight's dtype
        module = build(name, dtype=torch.bfloat16, bias=True)
        module.bias.data = module.bias.data.float()
        with pytest.raises(runtime.NormgenError, match="bias has dtype torch.float32; it must have the weight's"):
            module(*args)
    fp32_x = inputs(spec, torch.float32)  # fp32 x takes fp32 parameters only
    with pytest.raises(runtime.NormgenError, match=r"must have x's dtype \(torch.float32\)$"):
        build(name, dtype=torch.bfloat16)(*fp32_x)


def test_device_mismatch_does_not_blame_the_dtype():
    x = torch.randn(2, 8)
    with pytest.raises(runtime.NormgenError) as error:
        checks.check_param("rmsnorm", "weight", torch.ones(8, device="meta"), x)
    assert "must be on x's device" in str(error.value) and "dtype=" not in str(error.value)


def test_a_bias_without_a_weight_is_told_x_dtype_alone():
    """An op with a bias and no weight takes the bias in x's dtype only; the refusal of an fp32 bias
    with bf16 x listed fp32 as allowed (a 2026-11-29 audit). No shipped op has that form: the check
    itself is called, as the op surface calls it (dsl/surface.py, ``like`` None without a weight)."""
    from dsl import checks

    x = torch.randn(2, 8, dtype=torch.bfloat16)
    with pytest.raises(runtime.NormgenError, match=r"bias \(.*\) must have x's dtype \(torch.bfloat16\);"):
        checks.check_param("op", "bias", torch.zeros(8), x, None)
    with pytest.raises(runtime.NormgenError, match=r"weight \(.*\) must have x's dtype \(torch.bfloat16\) or torch"):
        checks.check_param("op", "weight", torch.zeros(8, dtype=torch.float16), x)
