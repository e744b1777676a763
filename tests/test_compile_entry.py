"""The lean call under torch.compile (dsl/custom_ops.py, ``compiling_entry``).

Dynamo guards what a traced call reads, and a compiled function runs every guard on every
call. Plainly valid calls therefore take a function written for each op, which reads little
besides the tensors; anything else takes the checked path, which names the problem. Three
properties, each checked against the checked path itself, never against the entry's own code:
it returns what the op returns, it declines whatever the checks refuse, and a compiled
function around an op carries few guards more than one calling the custom op directly.
"""

from __future__ import annotations

import pytest
import torch

import generated

from .cases import SPECS, make_inputs

NAMES = list(SPECS)


def op_of(name):
    return getattr(generated, name).__globals__["OP"]


def arguments(spec, inputs, norm_pos=None, mean=False, rstd=False, inplace=False, eps=1e-5):
    """The nine arguments of ``Op.__call__`` (and of the entry)."""
    return (
        inputs["x"],
        inputs.get("residual"),
        inputs.get("weight"),
        inputs.get("bias"),
        eps,
        norm_pos,
        mean,
        rstd,
        inplace,
    )


def forms(spec):
    for norm_pos in [m.value for m in spec.residual] or [None]:
        for mean in (False, True)[: 1 + spec.stores_mean]:
            for rstd in (False, True)[: 1 + spec.stores_rstd]:
                for inplace in (False, True)[: 1 + spec.has_residual]:
                    yield norm_pos, mean, rstd, inplace


def flat(result):
    return result if isinstance(result, tuple) else (result,)


def bits(t):
    return t.view(torch.uint8) if t.element_size() == 1 else t  # (fp8 and int8 compared as bytes)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("params", ["same", "fp32"])
def test_entry_returns_what_the_checked_call_returns(name, params):
    """Every call form, with and without a gradient wanted: the same outputs, bit for bit, the same
    aliasing (in place: the inputs themselves), and gradients through them."""
    spec, op = SPECS[name], op_of(name)
    dtype = torch.bfloat16 if params == "fp32" else torch.float32
    for norm_pos, mean, rstd, inplace in forms(spec):
        for grad in (False, True)[: 1 + (spec.has_backward and not inplace)]:
            got_inputs, want_inputs = (
                make_inputs(spec, 5, 96, dtype, "cpu", "2d", params=torch.float32 if params == "fp32" else None)
                for _ in range(2)
            )
            if grad:
                for inputs in (got_inputs, want_inputs):
                    inputs["x"].requires_grad_()
            got = op._compiling(*arguments(spec, got_inputs, norm_pos, mean, rstd, inplace))
            want = op(*arguments(spec, want_inputs, norm_pos, mean, rstd, inplace))
            form = f"{name} {norm_pos} mean={mean} rstd={rstd} inplace={inplace} grad={grad}"
            assert got is not None, f"{form}: the entry declined a valid call"
            got, want = flat(got), flat(want)
            assert len(got) == len(want), form
            for g, w in zip(got, want, strict=True):
                assert g.dtype == w.dtype and torch.equal(bits(g), bits(w)), form
            if inplace:
                for g, w in zip(got, want, strict=True):
                    for key in ("x", "residual"):
                        assert (g is got_inputs[key]) == (w is want_inputs[key]), f"{form}: {key} aliasing"
            if grad:
                for outputs in (got, want):
                    sum(o.float().sum() for o in outputs).backward()
                assert torch.equal(got_inputs["x"].grad, want_inputs["x"].grad), form


def bad_calls(spec):
    """(what, arguments) of calls the checks refuse."""
    x_dtype = torch.bfloat16

    def make(**change):
        inputs = make_inputs(spec, 4, 64, x_dtype, "cpu", "2d")
        inputs.update({k: v for k, v in change.items() if k in ("x", "residual", "weight", "bias")})
        options = {k: v for k, v in change.items() if k in ("norm_pos", "mean", "rstd", "inplace", "eps")}
        options.setdefault("norm_pos", spec.residual[0].value if spec.has_residual else None)
        return arguments(spec, inputs, **options)

    yield "x not a tensor", make(x=[[1.0] * 64] * 4)
    yield "x of integers", make(x=torch.ones(4, 64, dtype=torch.int32))
    yield "x float64", make(x=torch.randn(4, 64, dtype=torch.float64))
    yield "x a scalar", make(x=torch.tensor(1.0, dtype=x_dtype))
    yield "x no columns", make(x=torch.randn(4, 0, dtype=x_dtype))
    yield "x's columns strided", make(x=torch.randn(64, 4, dtype=x_dtype).t())
    rows = [torch.randn(1, 64, dtype=x_dtype), torch.randn(3, 64, dtype=x_dtype)]
    yield "x nested", make(x=torch.nested.nested_tensor(rows, layout=torch.jagged))
    yield "x sparse", make(x=torch.randn(4, 64, dtype=x_dtype).to_sparse())
    yield "eps negative", make(eps=-1e-5)
    yield "eps infinite", make(eps=float("inf"))
    yield "eps above fp32's largest", make(eps=1e39)
    yield "eps nan", make(eps=float("nan"))
    if spec.has_residual:
        yield "residual of another shape", make(residual=torch.randn(4, 32, dtype=x_dtype))
        yield "residual of another dtype", make(residual=torch.randn(4, 64, dtype=torch.float16))
        yield "residual's columns strided", make(residual=torch.randn(64, 4, dtype=x_dtype).t())
        yield "residual on another device", make(residual=torch.randn(4, 64, dtype=x_dtype, device="meta"))
        yield "residual sparse (csr)", make(residual=torch.randn(4, 64, dtype=x_dtype).to_sparse_csr())
        yield "norm_pos unknown", make(norm_pos="middle")
        x = torch.randn(4, 64, dtype=x_dtype, requires_grad=True)
        yield "in place with a gradient", make(x=x, inplace=True)
    else:
        yield "norm_pos given without a residual", make(norm_pos="pre")
        yield "in place without a residual", make(inplace=True)
    if not spec.stores_mean:
        yield "mean asked of an op without it", make(mean=True)
    if not spec.stores_rstd:
        yield "rstd asked of an op without it", make(rstd=True)
    if not spec.has_backward:
        x = torch.randn(4, 64, dtype=x_dtype, requires_grad=True)
        yield "a gradient wanted of an op without a backward", make(x=x)
    for p in [p for p in ("weight", "bias") if getattr(spec, f"has_{p}")]:
        yield f"{p} of another width", make(**{p: torch.randn(32, dtype=x_dtype)})
        yield f"{p} sparse", make(**{p: torch.randn(64, dtype=x_dtype).to_sparse()})
        yield f"{p} of two dimensions", make(**{p: torch.randn(1, 64, dtype=x_dtype)})
        yield f"{p} float16 with bfloat16 x", make(**{p: torch.randn(64, dtype=torch.float16)})
        yield f"{p} float64", make(**{p: torch.randn(64, dtype=torch.float64)})
        yield f"{p} strided", make(**{p: torch.randn(128, dtype=x_dtype)[::2]})
        yield f"{p} on another device", make(**{p: torch.randn(64, dtype=x_dtype, device="meta")})
        yield f"{p} not a tensor", make(**{p: [1.0] * 64})
    if spec.has_bias and spec.has_weight:
        yield "bias fp32 with a bf16 weight", make(bias=torch.randn(64))


@pytest.mark.parametrize("name", NAMES)
def test_entry_declines_what_the_checks_refuse(name):
    spec, op = SPECS[name], op_of(name)
    cases = list(bad_calls(spec))
    assert len(cases) >= 15
    for what, args in cases:
        with pytest.raises((TypeError, ValueError)):  # the case is bad: the checked call refuses it
            op(*args)
            pytest.fail(f"{name}: the checked call took {what}")
        assert op._compiling(*args) is None, f"{name}: the entry took a call the checks refuse ({what})"


def test_every_op_has_an_entry():
    for name in SPECS:
        assert op_of(name)._compiling is not None, name


@pytest.mark.parametrize("name", ["rmsnorm", "add_rmsnorm", "layernorm"])
def test_compiled_call_carries_few_guards_more_than_the_custom_op(name):
    """Dynamo's guards around an op (``torch._dynamo.explain``) against those around its custom op
    called directly: the checked path alone added 68 around rmsnorm."""
    spec, op = SPECS[name], op_of(name)
    inputs = make_inputs(spec, 4, 64, torch.float32, "cpu", "2d")
    public = getattr(generated, name)
    values = {**inputs, "eps": 1e-5, "norm_pos": "pre"}
    direct_args = [values.get(p, False) for p in op.call_params]

    def through_op(*tensors):
        return public(*tensors)

    def direct(*tensors):
        return op.functional_op(*tensors, *direct_args[len(tensors) :])

    counts = []
    for fn in (through_op, direct):
        torch._dynamo.reset()
        explained = torch._dynamo.explain(fn)(*inputs.values())
        assert explained.graph_count == 1 and explained.graph_break_count == 0
        counts.append(len(explained.out_guards))
    torch._dynamo.reset()
    assert counts[0] - counts[1] <= 24, f"{name}: {counts[0]} guards around the op, {counts[1]} around its custom op"
