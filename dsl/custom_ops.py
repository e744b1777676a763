"""An op's custom ops (hand-written): what torch.library and torch.compile see of it.

``register`` gives each ``Op`` (``dsl/surface.py``) the functional custom op
``<namespace>::<op>`` and, with a residual, ``<op>_inplace`` (any mode) and
``<op>_inplace_<mode>`` (one mode's, marking only what it writes), with their fake
implementations; on cuda under torch.compile each decomposes into its Triton kernels
(``dsl/compiled.py``), and the functional op carries the backward (``dsl/backward.py``).
A direct ``torch.ops`` call runs the op's checks too. The op surface calls through them
where a checked call is not a plain eager one: ``compiling_call`` under torch.compile
(dynamo records the custom op; its body runs when the graph runs) and ``autograd_call``
where a gradient is needed. Under torch.compile, plainly valid calls skip the checked path:
``compiling_entry`` writes each op a function that dynamo needs few guards for.
"""

from __future__ import annotations

import functools
import inspect

import torch

from . import backward, checks, compiled
from .checks import NormgenError

INPUTS = ("x", "residual", "weight", "bias")

# The custom ops' parameter types (their schemas are inferred from these).
_TENSOR, _MAYBE = torch.Tensor, torch.Tensor | None
_TYPES = {"x": _TENSOR, "residual": _TENSOR, "weight": _TENSOR, "bias": _MAYBE, "eps": float, "norm_pos": str}
_TYPES.update(return_mean=bool, return_rstd=bool, q=_TENSOR, scale=_TENSOR, mean=_MAYBE, rstd=_MAYBE)


def _signature(params: tuple, returns) -> inspect.Signature:
    parameters = [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=_TYPES[p]) for p in params]
    return inspect.Signature(parameters, return_annotation=returns)


_OWNERS: dict[str, str] = {}  # custom op qualname -> the package that registered it


def _claim(op) -> None:
    """Refuse a qualname another package registered: torch.library would replace that package's op
    silently, and its calls through the custom op (gradients, torch.compile, torch.ops) would then
    run this package's math. The same package registering again (a reload) is fine."""
    qualnames = _qualnames(op)
    for qualname in qualnames:  # (every one before any is registered)
        owner = _OWNERS.get(qualname)
        namespace, opname = qualname.split("::")
        if owner is None and hasattr(getattr(torch.ops, namespace), opname):
            owner = "code outside normgen"
        if owner is not None and owner != op.package:
            raise NormgenError(
                f"{op.name}: the custom op {qualname} is registered already (by {owner}); package "
                f"{op.package!r} was built with the same namespace {namespace!r}. Build it with a namespace "
                f"of its own (python build.py --namespace NAME)"
            )
    for qualname in qualnames:
        _OWNERS[qualname] = op.package


def _qualnames(op) -> list[str]:
    """Every custom op ``register`` makes for ``op`` (as dsl/names.py's custom_op_names, qualified)."""
    names = [op.custom_op]
    if op.has_residual:
        names += [f"{op.custom_op}_inplace"] + [f"{op.custom_op}_inplace_{mode}" for mode in op.modes]
    if op.backward:
        names.append(f"{op.custom_op}_backward")
    return names


def register(op) -> None:
    """The custom ops of ``op`` (an ``Op``): the functional one and, with a residual, the in-place one.

    Sets the op's ``call_params`` and ``functional_op`` (and ``inplace_params``, ``inplace_op``, ``inplace_ops``).
    """
    _claim(op)
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
        _check_buffers(op, given, extras, not traced)
        op.forward(new, *call[:4], eps, *call[5:], traced=traced)

    inplace.__signature__ = _signature(op.inplace_params, None)
    # NAME_inplace takes any mode and so declares every input a mode writes; NAME_inplace_MODE, one
    # mode's call, declares only what that mode writes (post mode leaves the residual alone, a quantized
    # op's pre mode x): torch.compile records these, so it copies back and versions only what is written
    writes = {mode: _written(op, mode) for mode in op.modes}
    ops = {}
    for suffix, modes in (("", op.modes), *((f"_{mode}", (mode,)) for mode in op.modes)):
        written = tuple(name for name in ("x", "residual") if any(name in writes[mode] for mode in modes))
        body = inplace if not suffix else _one_mode(op, inplace, modes[0])
        body.__signature__ = inplace.__signature__
        custom = torch.library.custom_op(f"{op.custom_op}_inplace{suffix}", body, mutates_args=written + extras)
        custom.register_fake(lambda *args: None)
        compiled.decompose(custom, op.inplace_params, functools.partial(body, traced=True), op.cuda_kernels)
        ops[suffix] = getattr(getattr(torch.ops, namespace), f"{opname}_inplace{suffix}")
    op.inplace_op = ops[""]
    op.inplace_ops = {mode: ops[f"_{mode}"] for mode in op.modes}  # (by norm_pos: what compiled calls record)


def _written(op, norm_pos: str) -> tuple[str, ...]:
    """The inputs (x, residual) an in-place call in mode ``norm_pos`` writes, as ``Op.slots`` says."""
    x, residual = object(), object()
    slots = op.slots([object() for _ in range(5)], x, residual, norm_pos, False, False, True)
    return tuple(name for name, t in (("x", x), ("residual", residual)) if any(s is t for s in slots))


def _one_mode(op, inplace, mode: str):
    """The in-place body for calls in ``mode`` alone (``NAME_inplace_MODE``)."""

    def body(*args, traced=False):
        norm_pos = args[op.inplace_params.index("norm_pos")]
        if norm_pos != mode:
            raise NormgenError(f"{op.name}: {op.custom_op}_inplace_{mode} takes norm_pos={mode!r}, not {norm_pos!r}")
        inplace(*args, traced=traced)

    return body


def _check_buffers(op, given: dict, extras: tuple, memory: bool) -> None:
    """The in-place op's output buffers (q, scale, mean, rstd), as ``Op.new_outputs`` would allocate
    them: the kernels write them whole. ``memory``: also apart from x, residual and one another
    (not while tracing: that reads pointers)."""
    x = given["x"]
    rows = tuple(x.shape[:-1])
    stats = (op.stats_dtype or x.dtype,)
    wanted = {
        "q": (tuple(x.shape), (op.quant_storage,)),  # (fp8: its bits, as uint8)
        "scale": (rows + (1,), (torch.float32,)),
        "mean": (rows, stats),
        "rstd": (rows, stats),
    }
    buffers = {p: given[p] for p in extras if given[p] is not None}
    for name, t in buffers.items():
        checks.check_buffer(op.name, name, t, x, *wanted[name])
    if not memory:
        return
    seen = {"x": x, "residual": given["residual"]}
    for name, t in buffers.items():
        for other, u in seen.items():
            if checks.overlap(t, u):
                raise NormgenError(f"{op.name}: {name} shares memory with {other}; pass {name} in memory of its own")
        seen[name] = t


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
        op.inplace_ops[norm_pos](*[values[p] for p in op.inplace_params])
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


# ----------------------------------------------------------------------------
# The compiled call's lean entry

_HALF_NAMES = tuple(str(d) for d in checks.HALF)  # the 16-bit dtypes that take fp32 parameters, as str() names them


def compiling_entry(op):
    """The op's call under torch.compile for plainly valid inputs: a function written for this op,
    its constants in its code, that calls the custom op as ``compiling_call`` and ``autograd_call`` do;
    None for any other call (the caller then takes the checked path, which names the problem).

    Why: dynamo guards everything a traced call reads, and a compiled function runs those guards
    on every call. The checked path reads the op's attributes, the check functions, their modules
    and builtins: around ``rmsnorm`` 84 guards, against 16 for torch's own ``rms_norm``. This one
    reads the tensors' properties (which dynamo guards anyway), ``isinstance`` and ``str`` and the two
    custom ops (its module's globals). Its tests are narrower than the checks (it takes no ``SymFloat``
    eps, nothing the checks would refuse), and the custom op's body checks again.
    """
    quantized = op.quant_storage is not None
    # q as the op returns it: fp8 is allocated as its bits (surface.Op.public)
    public_q = "q.view(QDTYPE)" if quantized and op.quant_dtype is not op.quant_storage else "q"
    tensors = [p for p in ("x", "residual", "weight") if p in op.inputs]
    dtypes = tuple(str(d) for d in op.dtypes)
    stats_dtype = "dtype" if op.stats_dtype is None else "STATS"
    lines = [
        "def entry(x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace):",
        "    if not (",
        "        " + " and ".join(f"isinstance({t}, Tensor)" for t in tensors),
        "        and " + ("(bias is None or isinstance(bias, Tensor))" if op.has_bias else "bias is None"),
        f"        and type(eps) is float and 0.0 <= eps <= {checks.EPS_MAX!r}",
        f"        and norm_pos in {tuple(op.call_modes)!r}",
        f"        and (return_mean is False{' or return_mean is True' * ('mean' in op.stats)})",
        f"        and (return_rstd is False{' or return_rstd is True' * ('rstd' in op.stats)})",
        f"        and (inplace is False{' or inplace is True' * op.has_residual})",
        "    ):",
        "        return None",
        "    dtype = x.dtype",
        "    n_cols = x.shape[-1] if x.dim() else 0",
        "    if not (",
        # (a nested or sparse tensor is the checks' to name: the custom op has no kernel for those layouts)
        "        x.layout == STRIDED and not x.is_nested",
        f"        and str(dtype) in {dtypes!r} and n_cols > 0 and (x.stride(-1) == 1 or n_cols == 1)",
    ]
    if op.has_residual:
        lines.append(
            "        and residual.layout == STRIDED and residual.shape == x.shape and residual.dtype == dtype"
            " and residual.device == x.device"
            " and (residual.stride(-1) == 1 or n_cols == 1)"
        )
    params = [p for p in ("weight", "bias") if p in op.inputs]
    for p in params:
        # the checks' rule (dsl/checks.py, check_param): x's dtype, or fp32 with 16-bit x; a bias as the weight
        like = "weight.dtype" if p == "bias" and op.has_weight else None
        dtype_ok = (
            f"{p}.dtype == {like}"
            if like
            else f"({p}.dtype == dtype or str({p}.dtype) == 'torch.float32' and str(dtype) in {_HALF_NAMES!r})"
            if p == "weight"
            else f"{p}.dtype == dtype"
        )
        test = (
            f"{p}.layout == STRIDED and {p}.shape == (n_cols,) and {p}.device == x.device and {dtype_ok}"
            f" and ({p}.stride(0) == 1 or n_cols == 1)"
        )
        lines.append(f"        and (bias is None or {test})" if p == "bias" else f"        and {test}")
    lines += [
        "    ):",
        "        return None",
        "    grad = is_grad_enabled() and ("
        + " or ".join(f"{t}.requires_grad" for t in tensors)
        + (" or bias is not None and bias.requires_grad" if op.has_bias else "")
        + ")",
    ]
    values = {p: p for p in (*INPUTS, "eps", "norm_pos")}  # the entry's own arguments, by name
    if op.has_residual:
        # in place: the statistics asked for (and a quantized op's q and scale) are allocated here,
        # the kernels write x (and residual)
        values.update(q="q", scale="scale", mean="mean", rstd="rstd")
        inplace_args = ", ".join(values[p] for p in op.inplace_params)
        residual_out = "residual if norm_pos == 'pre' else x" if "pre" in op.new_residual_out else "x"
        # (x passed as the residual too: the checked path refuses it)
        lines += ["    if inplace:", "        if grad or x is residual:", "            return None"]
        if quantized:
            lines += [
                "        q = empty_like(x, dtype=QSTORAGE, memory_format=CONTIGUOUS)",
                "        scale = empty(x.shape[:-1] + (1,), dtype=FLOAT32, device=x.device)",
            ]
        lines += [
            f"        mean = empty(x.shape[:-1], dtype={stats_dtype}, device=x.device) if return_mean else None",
            f"        rstd = empty(x.shape[:-1], dtype={stats_dtype}, device=x.device) if return_rstd else None",
            f"        inplace_ops[norm_pos]({inplace_args})",
            f"        result = ({public_q}, {residual_out}, scale)"
            if quantized
            else f"        result = (x, {residual_out})",
            "        return result + ((mean,) if return_mean else ()) + ((rstd,) if return_rstd else ())",
        ]
    if not op.backward:
        lines += ["    if grad:", "        return None"]
    asked = {s: f"return_{s} or grad" if s in op.saved else f"return_{s}" for s in ("mean", "rstd")}
    values.update(return_mean="ask_mean", return_rstd="ask_rstd")
    lines += [
        f"    ask_mean = {asked['mean']}",
        f"    ask_rstd = {asked['rstd']}",
        f"    new = functional_op({', '.join(values[p] for p in op.call_params)})",
        "    q = new[0]",
        f"    out = {public_q}",
    ]
    if op.has_residual:
        lines += [
            f"    separate = norm_pos in {op.new_residual_out!r}",
            "    result = (out, new[1] if separate else out)",
            "    i = 1 + separate",
        ]
    else:
        lines += ["    result = (out,)", "    i = 1"]
    if quantized:
        lines += ["    result += (new[i],)", "    i += 1"]  # the scale
    if "mean" in op.stats or "mean" in op.saved:  # (the mean comes back when asked or saved; else neither)
        lines += ["    if ask_mean:", "        if return_mean:", "            result += (new[i],)", "        i += 1"]
    lines += [
        "    if return_rstd:",
        "        result += (new[i],)",
        "    return result"
        if op.has_residual or quantized
        else "    return result if return_mean or return_rstd else out",
    ]
    namespace = {
        "Tensor": torch.Tensor,
        "STATS": op.stats_dtype,
        "FLOAT32": torch.float32,
        "QSTORAGE": op.quant_storage,
        "QDTYPE": op.quant_dtype,
        "CONTIGUOUS": torch.contiguous_format,
        "STRIDED": torch.strided,
        "empty_like": torch.empty_like,
        "empty": torch.empty,
        "is_grad_enabled": torch.is_grad_enabled,
        "functional_op": op.functional_op,
        "inplace_ops": getattr(op, "inplace_ops", None),
    }
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<normgen compiled entry of {op.name}>", "exec"), namespace)
    entry = namespace["entry"]
    entry.source = source  # (for readers and tests)
    return entry
