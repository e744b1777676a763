"""An op's custom ops (hand-written): what torch.library and torch.compile see of it.

``register`` gives each ``Op`` (``dsl/surface.py``) the functional custom op
``<namespace>::<op>`` and, with a residual, ``<op>_inplace``, with their fake
implementations; on cuda under torch.compile each decomposes into its Triton kernels
(``dsl/compiled.py``), and the functional op carries the backward (``dsl/backward.py``).
A direct ``torch.ops`` call runs the op's checks too. The op surface calls through them
where a checked call is not a plain eager one: ``compiling_call`` under torch.compile
(dynamo records the custom op; its body runs when the graph runs) and ``autograd_call``
where a gradient is needed.
"""

from __future__ import annotations

import inspect

import torch

from . import backward, compiled

INPUTS = ("x", "residual", "weight", "bias")

# The custom ops' parameter types (their schemas are inferred from these).
_TENSOR, _MAYBE = torch.Tensor, torch.Tensor | None
_TYPES = {"x": _TENSOR, "residual": _TENSOR, "weight": _TENSOR, "bias": _MAYBE, "eps": float, "norm_pos": str}
_TYPES.update(return_mean=bool, return_rstd=bool, q=_TENSOR, scale=_TENSOR, mean=_MAYBE, rstd=_MAYBE)


def _signature(params: tuple, returns) -> inspect.Signature:
    parameters = [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=_TYPES[p]) for p in params]
    return inspect.Signature(parameters, return_annotation=returns)


def register(op) -> None:
    """The custom ops of ``op`` (an ``Op``): the functional one and, with a residual, the in-place one.

    Sets the op's ``call_params`` and ``functional_op`` (and ``inplace_params``, ``inplace_op``).
    """
    op.call_params = tuple(p for p in INPUTS if p in op.inputs) + ("eps",) + ("norm_pos",) * op.has_residual
    # the flags of the statistics a call may ask for, and of those a training forward saves
    op.call_params += tuple(f"return_{s}" for s in ("mean", "rstd") if s in op.stats or s in op.saved)
    namespace, opname = op.custom_op.split("::")

    def functional(*args, traced=False):
        given = dict(zip(op.call_params, args, strict=True))
        call = _arguments(given, inplace=False)
        eps = op.check(*call[:6], False)  # direct torch.ops calls get the op's checks too
        new = op.new_outputs(call[0], *call[5:8], False)
        op.forward(new, *call[:4], eps, *call[5:], traced=traced)
        return new

    def fake(*args):
        given = dict(zip(op.call_params, args, strict=True))
        call = _arguments(given, inplace=False)
        return op.new_outputs(call[0], *call[5:8], False)

    functional.__signature__ = _signature(op.call_params, list[torch.Tensor])
    custom = torch.library.custom_op(op.custom_op, functional, mutates_args=())
    custom.register_fake(fake)
    # under torch.compile on cuda: the kernels themselves (dsl/compiled.py)
    compiled.decompose(custom, op.call_params, lambda *a: functional(*a, traced=True), op.cuda_kernels)
    op.functional_op = getattr(getattr(torch.ops, namespace), opname)
    if op.backward:
        backward.register(op, custom, namespace, opname)
    if not op.has_residual:
        return
    extras = ("q", "scale") * (op.quant_storage is not None) + op.stats
    op.inplace_params = tuple(p for p in op.call_params if not p.startswith("return_")) + extras

    def inplace(*args, traced=False):
        given = dict(zip(op.inplace_params, args, strict=True))
        new = [given[p] for p in extras if given[p] is not None]
        given.update({f"return_{s}": given[s] is not None for s in op.stats})
        call = _arguments(given, inplace=True)
        eps = op.check(*call[:6], not traced)  # (traced: the overlap checks read pointers; the call made them)
        op.forward(new, *call[:4], eps, *call[5:], traced=traced)

    inplace.__signature__ = _signature(op.inplace_params, None)
    mutates = ("x", "residual") + extras
    custom = torch.library.custom_op(f"{op.custom_op}_inplace", inplace, mutates_args=mutates)
    custom.register_fake(lambda *args: None)
    compiled.decompose(custom, op.inplace_params, lambda *a: inplace(*a, traced=True), op.cuda_kernels)
    op.inplace_op = getattr(getattr(torch.ops, namespace), f"{opname}_inplace")


def _arguments(given: dict, inplace: bool) -> tuple:
    """The nine arguments of a call from the custom op's named ones."""
    names = INPUTS + ("eps", "norm_pos", "return_mean", "return_rstd")
    return tuple(given.get(p, False if p.startswith("return_") else None) for p in names) + (inplace,)


def compiling_call(op, x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace):
    """A checked call under torch.compile: the custom op, which dynamo records (its body runs when the graph runs)."""
    values = {"x": x, "residual": residual, "weight": weight, "bias": bias, "eps": eps, "norm_pos": norm_pos}
    if inplace:
        new = op.new_outputs(x, norm_pos, return_mean, return_rstd, True)
        out, _, scale, mean, rstd = op.slots(new, x, residual, norm_pos, return_mean, return_rstd, True)
        values.update(q=out, scale=scale, mean=mean, rstd=rstd)
        op.inplace_op(*[values[p] for p in op.inplace_params])
    else:
        values.update(return_mean=return_mean, return_rstd=return_rstd)
        new = op.functional_op(*[values[p] for p in op.call_params])
    slots = op.slots(new, x, residual, norm_pos, return_mean, return_rstd, inplace)
    return op.public(slots, return_mean, return_rstd)


def autograd_call(op, x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd):
    """A checked call that needs a gradient: the functional op (which carries the backward), asked for the
    statistics the backward needs."""
    values = {"x": x, "residual": residual, "weight": weight, "bias": bias, "eps": eps, "norm_pos": norm_pos}
    asked = {"mean": return_mean or "mean" in op.saved, "rstd": return_rstd or "rstd" in op.saved}
    values.update(return_mean=asked["mean"], return_rstd=asked["rstd"])
    new = op.functional_op(*[values[p] for p in op.call_params])
    slots = op.slots(new, x, residual, norm_pos, asked["mean"], asked["rstd"], False)
    return op.public(slots, return_mean, return_rstd)
