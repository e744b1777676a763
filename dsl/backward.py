"""The backward of an op (hand-written): its custom op, its autograd formula and its body.

The functional custom op ``<namespace>::<op>`` carries a ``torch.library.register_autograd``
formula that calls the backward custom op ``<op>_backward``; eager calls and torch.compile
take the same path. Under torch.compile on cuda, the backward op is decomposed into its
Triton kernels and the partial sums' reduction (``dsl/compiled.py``), which Inductor
launches from its own code.
"""

from __future__ import annotations

import inspect

import torch

from . import checks, compiled, runtime
from .checks import NormgenError

_TENSOR, _MAYBE = torch.Tensor, torch.Tensor | None
PARAMS = ("grad_out", "grad_residual_out", "x", "residual", "weight", "mean", "rstd", "eps", "bias_given", "norm_pos")
_TYPES = (_TENSOR, _MAYBE, _TENSOR, _MAYBE, _MAYBE, _MAYBE, _TENSOR, float, bool, str | None)


def register(op, custom, namespace: str, opname: str) -> None:
    """The backward custom op of ``op`` (an ``Op``) and the autograd formula of its functional op ``custom``."""
    signature = inspect.Signature(
        [
            inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=t)
            for p, t in zip(PARAMS, _TYPES, strict=True)
        ],
        return_annotation=list[torch.Tensor],
    )

    def backward_body(*args):
        check(op, *args)  # a direct torch.ops call gets the checks too; autograd's pass them
        return run(op, *args)

    def backward_fake(dy, ds, x, residual, weight, mean, rstd, eps, bias_given, norm_pos):
        grads = [torch.empty(x.shape, dtype=x.dtype, device=x.device)]
        params = (weight is not None) + bias_given
        if params:  # dw and db in the parameters' dtype (the weight's)
            grads.append(torch.empty((params, x.shape[-1]), dtype=checks.param_dtype(x, weight), device=x.device))
        return grads

    backward_body.__signature__ = signature
    backward = torch.library.custom_op(f"{op.custom_op}_backward", backward_body, mutates_args=())
    backward.register_fake(backward_fake)
    compiled.decompose(
        backward,
        PARAMS,
        lambda *args: run(op, *args, traced=True),
        lambda: op.cuda_kernels(backward=True) + [_sum_kernel()],
    )
    op.backward_op = getattr(getattr(torch.ops, namespace), f"{opname}_backward")
    custom.register_autograd(
        lambda ctx, grads: _autograd_backward(op, ctx, grads),
        setup_context=lambda ctx, inputs, output: _setup_context(op, ctx, inputs, output),
    )


def _sum_kernel():
    from . import device

    return device.sum_partials


def _setup_context(op, ctx, inputs, output) -> None:
    given = dict(zip(op.call_params, inputs, strict=True))
    x, residual, weight, bias = (given.get(p) for p in ("x", "residual", "weight", "bias"))
    norm_pos = given.get("norm_pos")
    ask_mean, ask_rstd = given.get("return_mean", False), given.get("return_rstd", False)
    _, residual_out, _, mean, rstd = op.slots(output, x, residual, norm_pos, ask_mean, ask_rstd, False)
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*[t for t in (mean, rstd) if t is not None])
    # what the forward normalized: s (its residual out) in pre mode, else x (post mode adds r again)
    pre = norm_pos == "pre"
    normalized = residual_out if pre else x
    ctx.save_for_backward(normalized, None if pre else residual, weight, mean, rstd)
    ctx.missing = [s for s, t in (("mean", mean), ("rstd", rstd)) if s in op.saved and t is None]
    ctx.eps, ctx.norm_pos, ctx.bias_given = given["eps"], norm_pos, bias is not None
    ctx.pre_grad = pre  # the second output (s) has a gradient of its own


def _autograd_backward(op, ctx, grads):
    if ctx.missing:
        asked = " and ".join(f"return_{s}=True" for s in ctx.missing)
        raise NormgenError(
            f"{op.name}: the backward needs the saved statistics; a direct call of the custom op "
            f"{op.custom_op} that needs a gradient must pass {asked} (generated.{op.name} does)"
        )
    normalized, residual, weight, mean, rstd = ctx.saved_tensors
    # a gradient of the gradient: the incoming gradients need one, or create_graph=True (grad mode on
    # in the backward) with inputs that need one; the backward op has no formula of its own
    if any(g is not None and g.requires_grad for g in grads) or (
        torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (normalized, residual, weight))
    ):
        raise NormgenError(
            f"{op.name}: double backward (a gradient of the gradient, create_graph=True) is not supported"
        )
    dy = grads[0]
    ds = grads[1] if ctx.pre_grad else None
    if dy is None:
        # y unused (only pre mode's s, or nothing): the norm passes no gradient, so the weight and bias get
        # none (None, as torch autograd of the formula gives: an optimizer skips them, where a zero gradient
        # would still decay them), and x and the residual get s's gradient as it is
        by_name = {"x": ds, "residual": ds if op.has_residual else None}
        return tuple(by_name.get(p) for p in op.call_params)
    dx, *sums = op.backward_op(dy, ds, normalized, residual, weight, mean, rstd, ctx.eps, ctx.bias_given, ctx.norm_pos)
    sums = iter(sums[0].unbind(0) if sums else ())  # the rows of dw and db
    dw = next(sums) if weight is not None else None
    db = next(sums) if ctx.bias_given else None
    by_name = {"x": dx, "residual": dx if op.has_residual else None, "weight": dw, "bias": db}
    return tuple(by_name.get(p) for p in op.call_params)


def check(op, dy, ds, x, residual, weight, mean, rstd, eps, bias_given, norm_pos) -> None:
    """The backward op's arguments, before anything is allocated or launched: what the kernels read
    whole must be whole (a short rstd was read past its end)."""
    name = f"{op.name}_backward"
    checks.check_choice(name, "norm_pos", norm_pos, op.call_modes)
    checks.check_input(name, x, op.dtypes)
    checks.check_like(name, "grad_out", dy, x, any_strides=True)
    if ds is not None:
        if norm_pos != "pre":
            raise NormgenError(f"{name}: grad_residual_out is the gradient on s, which only pre mode returns")
        checks.check_like(name, "grad_residual_out", ds, x, any_strides=True)
    if op.has_residual and norm_pos == "post":
        checks.check_like(name, "residual", residual, x, any_strides=True)  # post mode normalizes x + r again
    elif residual is not None:
        raise NormgenError(f"{name}: residual is passed in post mode only (pre mode's x is s itself)")
    if op.has_weight:
        checks.check_param(name, "weight", weight, x)
    elif weight is not None:
        raise NormgenError(f"{name}: this op has no weight")
    if not isinstance(bias_given, bool) or (bias_given and not op.has_bias):
        raise NormgenError(f"{name}: bias_given must be a bool, and False for an op without a bias")
    rows, stats = tuple(x.shape[:-1]), (op.stats_dtype or x.dtype,)
    for stat, t in (("mean", mean), ("rstd", rstd)):
        if stat in op.saved:
            checks.check_buffer(name, stat, t, x, rows, stats)
        elif t is not None:
            raise NormgenError(f"{name}: this op's backward takes no {stat}")
    checks.check_eps(name, eps)


def run(op, dy, ds, x, residual, weight, mean, rstd, eps, bias_given, norm_pos, traced=False) -> list:
    """The backward custom op's body: [dx] and, with a weight or a bias, one tensor of rows dw, db.

    ``x`` is what the forward normalized (s in pre mode); post mode passes the residual too.
    ``traced``: a graph is being traced (dsl/compiled.py): launch through wrap_triton, read no pointers.
    """
    target = "cuda" if dy.is_cuda else runtime.kernel_target(dy.device)
    if target is None:
        return _reference(op, dy, ds, x, residual, weight, eps, bias_given, norm_pos)
    n_cols = x.shape[-1]
    n_rows = x.numel() // n_cols
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    partial_dw = partial_db = None
    params, pdtype = (weight is not None) + bias_given, checks.param_dtype(x, weight)
    if n_rows == 0:
        return [dx] + [torch.zeros((params, n_cols), dtype=pdtype, device=x.device)] * bool(params)
    ds_given = ds is not None
    dy, dy_stride = checks.backward_rows(dy)
    x, x_stride = checks.backward_rows(x)
    residual, residual_stride = checks.backward_rows(residual) if residual is not None else (x, x_stride)
    ds, ds_stride = checks.backward_rows(ds) if ds_given else (dy, dy_stride)
    launcher, layouts = op.kernel_launch(target, backward=True)
    key, args = layouts[norm_pos]
    env = [dy, ds, x, residual, weight, mean, rstd, None, None, None]
    env += [dy_stride, ds_stride, x_stride, residual_stride, n_cols, n_rows, n_cols]
    env += [ds_given, bias_given, True, False, x.dtype, pdtype]
    device = x.get_device()
    launch_key = key(env)  # (the tensors set below are not part of it)
    decision = compiled.decide(launcher, launch_key, device) if traced else launcher.decision(launch_key, device)
    programs = decision[1][0]  # traced: a torch.SymInt where the rows are symbolic
    # one (programs, n_cols) fp32 block of partial sums per parameter gradient, summed at once below;
    # a split grid (cuda: few rows, or a layer norm's 8193-16384 columns) writes the gradients
    final = decision[2].get("SPLIT_N", 0) > 0
    shape = (params, n_cols) if final else (params, programs, n_cols)
    partials = torch.empty(shape, dtype=pdtype if final else torch.float32, device=x.device) if params else None
    if weight is not None:
        partial_dw = partials[0]
    if bias_given:
        partial_db = partials[params - 1]
    env[7:10] = [dx, partial_dw, partial_db]
    if traced:
        compiled.launch(decision, args(env))
    else:
        aligned = 0
        for t in (dy, ds, x, residual, weight, dx):
            if t is not None:
                aligned |= t.data_ptr()
        launcher(launch_key, aligned & 15 == 0, device, args(env))
    # the programs' partial sums, added in a fixed order: deterministic run to run
    if not params or final:
        return [dx, partials] if params else [dx]
    # one tensor for dw and db: a custom op's outputs may not be views of one another
    if target == "cuda":
        if traced:
            return [dx, compiled.sum_partials(partials, pdtype)]
        return [dx, runtime.sum_partials(partials, pdtype)]
    return [dx, (partials[:, 0] if programs == 1 else partials.sum(1)).to(pdtype)]


def _reference(op, dy, ds, x, residual, weight, eps, bias_given, norm_pos) -> list:
    """CPU without the interpreter: torch autograd through the generated reference."""
    primals = [t for t in (x, weight) if t is not None]
    if bias_given:
        primals.append(torch.zeros(x.shape[-1:], dtype=checks.param_dtype(x, weight), device=x.device))

    def formula(*tensors):
        leaf, *params = tensors
        w = params.pop(0) if weight is not None else None
        b = params.pop(0) if bias_given else None
        args = [leaf]
        if op.has_residual:
            # pre mode saved s: s + 0 is s, so the reference's sum passes the gradient on unchanged
            args.append(torch.zeros_like(leaf) if norm_pos == "pre" else residual)
        if op.has_weight:
            args.append(w)
        if op.has_bias:
            args.append(b)
        args.append(eps)
        if op.has_residual:
            args.append(norm_pos)
        out, residual_out, *_ = op.reference(*args)
        return (out, residual_out) if norm_pos == "pre" and ds is not None else (out,)

    # torch.func.vjp: the custom op's body runs below autograd, where torch.autograd.grad records nothing
    _, vjp = torch.func.vjp(formula, *primals)
    dx, *params = vjp((dy, ds) if norm_pos == "pre" and ds is not None else (dy,))
    return [dx, torch.stack(params)] if params else [dx]
