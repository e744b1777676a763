"""The op surface (hand-written): everything a generated op does around its kernels.

A generated op module holds its public function (signature and docstring from
the spec), its module class and an ``Op``: the descriptor of what varies per spec
(tensor inputs, dtypes, residual modes, outputs and statistics, quantization,
the reference, the kernels' modules). Calling the ``Op`` runs the op:

* a fast path for the common eager call (contiguous cuda or npu tensors that
  need no gradient, functional or in place, not compiling), proven valid with a
  few attribute reads; what does not change between calls is cached: the call's
  form (``_Form``: what it allocates, writes, returns) and, per shape, dtype and
  device, a record (``_Record``: launch key, fixed arguments, direct launch);
* otherwise every input check (``dsl/checks.py``), then, under torch.compile,
  the custom op (``<namespace>::<op>`` and ``<op>_inplace``, registered here
  with their fake implementations) so that dynamo records it (on cuda,
  ``dsl/compiled.py`` decomposes it into its Triton kernels; the backward is in
  ``dsl/backward.py``); eagerly, the kernels (or the reference on CPU) and the
  version bumps of in-place writes.

Every call passes all nine arguments of the widest op, ``(x, residual, weight,
bias, eps, norm_pos, return_mean, return_rstd, inplace)``; an op without one
passes None (False for switches). The kernels' arguments and launch key come
from the kernel module's ABI (``dsl/abi.py``) through ``runtime.layout``.

This module, ``backward``, ``compiled``, ``checks``, ``runtime``, ``abi`` and
``device`` are all a built package needs at run time: none of them imports the generator (Lark, Jinja2).
"""

from __future__ import annotations

import importlib
import inspect

import torch

from . import backward, checks, compiled, runtime
from .checks import NormgenError

_INF = float("inf")
_ABSENT = object()  # a name missing from a dict
_is_compiling = torch.compiler.is_compiling  # (dynamo knows the function, whatever its name here)
INPUTS = ("x", "residual", "weight", "bias")

# The custom ops' parameter types (their schemas are inferred from these).
_TENSOR, _MAYBE = torch.Tensor, torch.Tensor | None
_TYPES = {"x": _TENSOR, "residual": _TENSOR, "weight": _TENSOR, "bias": _MAYBE, "eps": float, "norm_pos": str}
_TYPES.update(return_mean=bool, return_rstd=bool, q=_TENSOR, scale=_TENSOR, mean=_MAYBE, rstd=_MAYBE)


def _signature(params: tuple, returns) -> inspect.Signature:
    parameters = [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=_TYPES[p]) for p in params]
    return inspect.Signature(parameters, return_annotation=returns)


class Op:
    """One generated op: its descriptor, and the behaviour every op shares."""

    def __init__(
        self,
        name: str,
        custom_op: str,
        *,
        inputs: tuple[str, ...],
        dtypes: tuple,
        modes: tuple[str, ...] = (),
        new_residual_out: tuple[str, ...] = (),
        stats: tuple[str, ...] = (),
        stats_dtype: torch.dtype | None = None,
        quantized: tuple | None = None,
        weight_init: float = 1.0,
        saved: tuple[str, ...] = (),
        reference,
        kernels: dict[str, str],
        package: str,
    ):
        self.name, self.custom_op, self.inputs, self.dtypes = name, custom_op, inputs, dtypes
        self.modes = modes  # residual modes, the default first; () without a residual
        self.call_modes = modes or (None,)  # norm_pos values a call may pass
        self.new_residual_out = new_residual_out  # modes whose residual out is a tensor of its own
        self.stats = stats  # "mean", "rstd": the statistics a call may ask for
        self.stats_dtype = stats_dtype  # None: x's dtype (casting none), else fp32
        self.quant_storage, self.quant_dtype = quantized or (None, None)  # q's storage and public dtypes
        self.weight_init = weight_init  # the effective scale (w + offset) starts at 1
        # The statistics a training forward saves for the backward ("mean" of a layer norm, "rstd");
        # () when the op has no backward (calls that need a gradient are refused).
        self.saved = saved
        self.backward = bool(saved)
        self.reference, self.kernels, self.package = reference, kernels, package
        self.has_residual, self.has_weight, self.has_bias = ("residual" in inputs, "weight" in inputs, "bias" in inputs)
        self._launches: dict[tuple, tuple] = {}  # (target, backward) -> (launcher, {mode: layout})
        self._register()
        # the fast path's call forms: (norm_pos, return_mean, return_rstd, inplace) -> _Form
        self._forms = {
            (norm_pos, mean, rstd, inplace): _Form(self, norm_pos, mean, rstd, inplace)
            for norm_pos in self.call_modes
            for mean in (False, True)[: 1 + ("mean" in stats)]
            for rstd in (False, True)[: 1 + ("rstd" in stats)]
            for inplace in (False, True)[: 1 + self.has_residual]
        }

    def kernel_launch(self, target: str, backward: bool = False) -> tuple:
        """(launcher, {mode: layout}) of a target and direction, importing its kernel module on first use."""
        launch = self._launches.get((target, backward))
        if launch is None:
            if target not in self.kernels:
                have = ", ".join(self.kernels)
                raise NormgenError(f"{self.name} is not generated for the {target} target (it has: {have})")
            module = importlib.import_module(f".{self.kernels[target]}", self.package)
            launcher = module.BACKWARD_LAUNCHER if backward else module.LAUNCHER
            layouts = {m: runtime.layout(launcher.abi, m, backward) for m in self.call_modes}
            launch = self._launches[target, backward] = (launcher, layouts)
        return launch

    def cuda_kernels(self, backward: bool = False) -> list:
        """The op's cuda Triton kernels of a direction (dsl/compiled.py names them to torch)."""
        return list(self.kernel_launch("cuda", backward)[0].kernels.values()) if "cuda" in self.kernels else []

    def _record(self, form: _Form, x, bias, pdtype) -> _Record | None:
        """The fast path's record of a call form at x's shape, dtype, device and parameters' dtype, cached.

        None, and nothing cached, where the fast path does not serve: devices other than
        the op's targets, cuda and npu (CPU tensors take the checked path to the reference
        or the interpreter), dtypes the op is not generated for, a weight dtype it refuses, no
        columns. The record holds what the launch needs that follows from these: sizes, the launch
        key, the launch environment's fixed part (contiguous rows) and, once the launcher has one,
        the kernel's direct launch.
        """
        device, dtype = x.device, x.dtype
        if device.type not in self.kernels or dtype not in self.dtypes or x.dim() == 0 or x.shape[-1] == 0:
            return None
        if not checks.takes_params(dtype, pdtype):
            return None
        shape = x.shape
        n_cols = shape[-1]
        n_rows = x.numel() // n_cols
        launcher, layouts = self.kernel_launch(device.type)
        layout = layouts[form.norm_pos]
        tail = runtime.launch_tail((n_cols,) * 4, n_rows, n_cols, bias is not None, form.mean, form.rstd, dtype, pdtype)
        stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) if device.type == "cuda" else None
        rec = _Record(
            n_rows, (n_cols,), shape[:-1], device, x.numel() * x.element_size(), launcher, layout, tail, stream
        )
        form.records[shape, dtype, device, bias is None, pdtype] = rec
        return rec

    def _launch(self, rec: _Record, x, residual, weight, bias, slots, eps, aligned: bool) -> None:
        """The fast path's launch through the launcher (the first of a record, unaligned, npu); then the
        record takes the direct launch the launcher may have made."""
        rec.launcher(rec.key, aligned, rec.device_index, rec.args((x, residual, weight, bias, *slots, eps) + rec.tail))
        if aligned and rec.stream is not None and rec.direct is None:
            rec.direct = rec.launcher.cached_launch(rec.key, rec.device_index)

    def __call__(self, x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace):
        try:
            # The common eager call, proven valid with a few attribute reads: its form (mode,
            # statistics, in place) and a record of x's shape, dtype, device and weight dtype
            # (``_record``) are cached; the tensors are contiguous, on that device, in those dtypes
            # and need no gradient. Anything else (or any doubt) takes the full checks below, which
            # name the problem. Under torch.compile the custom op (below) is recorded instead.
            fast = (
                not _is_compiling()
                and (form := self._forms.get((norm_pos, return_mean, return_rstd, inplace))) is not None
                and type(eps) is float
                and 0.0 <= eps < _INF
                and (pdtype := weight.dtype if self.has_weight else x.dtype) is not None
                and (
                    (
                        rec := form.records.get(
                            (shape := x.shape, dtype := x.dtype, device := x.device, bias is None, pdtype)
                        )
                    )
                    is not None
                    or (rec := self._record(form, x, bias, pdtype)) is not None
                )
                and x.is_contiguous()
                and not ((grad := torch.is_grad_enabled()) and x.requires_grad)
                and (
                    not self.has_residual
                    or residual.shape == shape
                    and residual.dtype is dtype
                    and residual.device == device
                    and residual.is_contiguous()
                    and not (grad and residual.requires_grad)
                )
                and (
                    not self.has_weight
                    or weight.shape == rec.param_shape
                    and weight.device == device
                    and weight.is_contiguous()
                    and not (grad and weight.requires_grad)
                )
                and (
                    bias is None
                    or bias.shape == rec.param_shape
                    and bias.dtype is pdtype
                    and bias.device == device
                    and bias.is_contiguous()
                    and not (grad and bias.requires_grad)
                )
            )
            if fast:
                aligned = xp = x.data_ptr()
                rp = wp = bp = None
                if self.has_residual:
                    aligned |= (rp := residual.data_ptr())
                if self.has_weight:
                    aligned |= (wp := weight.data_ptr())
                if bias is not None:
                    aligned |= (bp := bias.data_ptr())
                # In place, torch's rules: x and residual (contiguous, so each free of overlap)
                # must not overlap each other, and inference tensors are written only in
                # inference mode. (The checks refuse what this does not prove.)
                fast = not inplace or (
                    abs(xp - rp) >= rec.nbytes
                    and (torch.is_inference_mode_enabled() or not (x.is_inference() or residual.is_inference()))
                )
        except (AttributeError, IndexError, TypeError):
            fast = False
        if fast:
            slots, result, written = form.outputs(x, residual, rec)
            if rec.n_rows:
                aligned = aligned & 15 == 0
                direct = rec.direct
                if direct is not None and aligned:
                    # the kernel's direct launch; its inputs' pointers go as the ints read above
                    launch, grid, function, prefix, constexprs = direct
                    args = rec.args((xp, rp, wp, bp, *slots, eps) + rec.tail)
                    launch(grid, 1, 1, rec.stream(rec.device_index), function, *prefix, *args, *constexprs)
                else:
                    self._launch(rec, x, residual, weight, bias, slots, eps, aligned)
            if written:
                # the kernels wrote x (and residual) behind autograd's back, as torch's in-place ops do
                checks.bump_written(written)
            return result
        eps = self.check(x, residual, weight, bias, eps, norm_pos, inplace)
        if self.backward and checks.needs_grad(self._named(x, residual, weight, bias)):
            return self.autograd_call(x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd)
        if torch.compiler.is_compiling():
            # torch.compile records the custom op; its body runs when the graph runs
            values = {"x": x, "residual": residual, "weight": weight, "bias": bias, "eps": eps, "norm_pos": norm_pos}
            if inplace:
                new = self.new_outputs(x, norm_pos, return_mean, return_rstd, True)
                out, _, scale, mean, rstd = self.slots(new, x, residual, norm_pos, return_mean, return_rstd, True)
                values.update(q=out, scale=scale, mean=mean, rstd=rstd)
                self.inplace_op(*[values[p] for p in self.inplace_params])
            else:
                values.update(return_mean=return_mean, return_rstd=return_rstd)
                new = self.functional_op(*[values[p] for p in self.call_params])
            return self.public(
                self.slots(new, x, residual, norm_pos, return_mean, return_rstd, inplace), return_mean, return_rstd
            )
        new = self.new_outputs(x, norm_pos, return_mean, return_rstd, inplace)
        slots = self.forward(new, x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace)
        if inplace:
            # the kernels wrote x (and residual) behind autograd's back: bump their versions as torch's in-place ops do
            checks.bump_written(tuple(t for t in (x, residual) if any(o is t for o in slots) and not t.is_inference()))
        return self.public(slots, return_mean, return_rstd)

    def check(self, x, residual, weight, bias, eps, norm_pos, inplace) -> float:
        """Every input check, before anything is allocated or launched; returns eps as a float."""
        name = self.name
        if self.has_residual:
            checks.check_choice(name, "norm_pos", norm_pos, self.modes)
        checks.check_input(name, x, self.dtypes)
        if self.has_residual:
            checks.check_like(name, "residual", residual, x)
        if self.has_weight:
            checks.check_param(name, "weight", weight, x)
        if self.has_bias and bias is not None:
            checks.check_param(name, "bias", bias, x, weight if self.has_weight else None)
        named = self._named(x, residual, weight, bias)
        if not self.backward:
            checks.check_no_grad(name, named, self.quant_storage is not None)
        elif inplace and checks.needs_grad(named):
            checks.refuse_inplace_grad(name, named)
        if inplace:
            checks.check_inplace(name, x, residual)
        return checks.check_eps(name, eps)

    def _named(self, x, residual, weight, bias) -> dict:
        """The op's tensor arguments by name, in order (bias may be None)."""
        named = {"x": x, "residual": residual} if self.has_residual else {"x": x}
        if self.has_weight:
            named["weight"] = weight
        if self.has_bias:
            named["bias"] = bias
        return named

    def new_outputs(self, x, norm_pos, return_mean, return_rstd, inplace) -> list:
        """The tensors a call allocates, in the order out, residual_out, scale, mean, rstd."""
        dense = x.is_contiguous()  # then empty_like(x) is contiguous, and cheaper without keywords
        new = []
        if self.quant_storage is not None:
            new.append(torch.empty_like(x, dtype=self.quant_storage, memory_format=torch.contiguous_format))
        elif not inplace:
            new.append(torch.empty_like(x) if dense else torch.empty_like(x, memory_format=torch.contiguous_format))
        if not inplace and norm_pos in self.new_residual_out:
            new.append(torch.empty_like(x) if dense else torch.empty_like(x, memory_format=torch.contiguous_format))
        if self.quant_storage is not None:
            new.append(torch.empty(x.shape[:-1] + (1,), dtype=torch.float32, device=x.device))
        stats_dtype = self.stats_dtype or x.dtype
        if return_mean:
            new.append(torch.empty(x.shape[:-1], dtype=stats_dtype, device=x.device))
        if return_rstd:
            new.append(torch.empty(x.shape[:-1], dtype=stats_dtype, device=x.device))
        return new

    def slots(self, new, x, residual, norm_pos, return_mean, return_rstd, inplace) -> tuple:
        """(out, residual_out, scale, mean, rstd): the new tensors, and the inputs a call writes to."""
        new = iter(new)
        out = next(new) if self.quant_storage is not None or not inplace else x
        if not self.has_residual:
            residual_out = None
        elif norm_pos in self.new_residual_out:
            residual_out = (residual if norm_pos == "pre" else x) if inplace else next(new)
        else:
            residual_out = out
        scale = next(new) if self.quant_storage is not None else None
        mean = next(new) if return_mean else None
        rstd = next(new) if return_rstd else None
        return out, residual_out, scale, mean, rstd

    def public(self, slots, return_mean, return_rstd):
        """What the op returns: out (q), residual_out and scale where the op has them, the asked statistics."""
        out, residual_out, scale, mean, rstd = slots
        if self.quant_dtype is not self.quant_storage:
            out = out.view(self.quant_dtype)  # fp8 is allocated as its bits
        result = (out, residual_out) if self.has_residual else (out,)
        if self.quant_storage is not None:
            result += (scale,)
        if return_mean:
            result += (mean,)
        if return_rstd:
            result += (rstd,)
        return result[0] if len(result) == 1 else result

    def forward(self, new, x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace, traced=False):
        """Compute the outputs of checked inputs into `new` (and, in place, into x and residual); returns the slots.

        ``traced``: a graph is being traced (dsl/compiled.py): launch through wrap_triton, read no pointers.
        """
        out, residual_out, scale, mean, rstd = slots = self.slots(
            new, x, residual, norm_pos, return_mean, return_rstd, inplace
        )
        target = "cuda" if x.is_cuda else runtime.kernel_target(x.device)
        if target is None:
            extra = (norm_pos,) if self.has_residual else ()
            checks.copy_outputs(slots, self.reference(*self._named(x, residual, weight, bias).values(), eps, *extra))
            return slots
        n_cols = x.shape[-1]
        n_rows = x.numel() // n_cols
        if n_rows == 0:
            return slots
        x_rows, x_stride = (x, n_cols) if x.is_contiguous() else checks.rows(x)
        out_stride = residual_stride = residual_out_stride = n_cols
        if self.has_residual:
            residual_rows, residual_stride = (residual, n_cols) if residual.is_contiguous() else checks.rows(residual)
            out_stride = x_stride if out is x else n_cols
            if residual_out is residual:
                residual_out_stride = residual_stride
            elif residual_out is x:
                residual_out_stride = x_stride
            residual = residual_rows
        x = x_rows
        launcher, layouts = self.kernel_launch(target)
        layout = layouts[norm_pos]
        env = (x, residual, weight, bias, out, residual_out, scale, mean, rstd, eps)
        strides = (x_stride, residual_stride, out_stride, residual_out_stride)
        switches = (bias is not None, mean is not None, rstd is not None)
        env += runtime.launch_tail(strides, n_rows, n_cols, *switches, x.dtype, checks.param_dtype(x, weight))
        if traced:
            compiled.launch(compiled.decide(launcher, layout.key(env), x.get_device()), layout.args(env))
            return slots
        aligned = x.data_ptr()
        for t in (residual, weight, bias):
            if t is not None:
                aligned |= t.data_ptr()
        launcher(layout.key(env), aligned & 15 == 0, x.get_device(), layout.args(env))
        return slots

    # torch.library registration: the functional op and, with a residual, the in-place one.

    def _register(self) -> None:
        self.call_params = tuple(p for p in INPUTS if p in self.inputs) + ("eps",) + ("norm_pos",) * self.has_residual
        # the flags of the statistics a call may ask for, and of those a training forward saves
        self.call_params += tuple(f"return_{s}" for s in ("mean", "rstd") if s in self.stats or s in self.saved)
        namespace, opname = self.custom_op.split("::")

        def functional(*args, traced=False):
            given = dict(zip(self.call_params, args, strict=True))
            call = self._arguments(given, inplace=False)
            eps = self.check(*call[:6], False)  # direct torch.ops calls get the op's checks too
            new = self.new_outputs(call[0], *call[5:8], False)
            self.forward(new, *call[:4], eps, *call[5:], traced=traced)
            return new

        def fake(*args):
            given = dict(zip(self.call_params, args, strict=True))
            call = self._arguments(given, inplace=False)
            return self.new_outputs(call[0], *call[5:8], False)

        functional.__signature__ = _signature(self.call_params, list[torch.Tensor])
        custom = torch.library.custom_op(self.custom_op, functional, mutates_args=())
        custom.register_fake(fake)
        # under torch.compile on cuda: the kernels themselves (dsl/compiled.py)
        compiled.decompose(custom, self.call_params, lambda *a: functional(*a, traced=True), self.cuda_kernels)
        self.functional_op = getattr(getattr(torch.ops, namespace), opname)
        if self.backward:
            backward.register(self, custom, namespace, opname)
        if not self.has_residual:
            return
        extras = ("q", "scale") * (self.quant_storage is not None) + self.stats
        self.inplace_params = tuple(p for p in self.call_params if not p.startswith("return_")) + extras

        def inplace(*args, traced=False):
            given = dict(zip(self.inplace_params, args, strict=True))
            new = [given[p] for p in extras if given[p] is not None]
            given.update({f"return_{s}": given[s] is not None for s in self.stats})
            call = self._arguments(given, inplace=True)
            eps = self.check(*call[:6], not traced)  # (traced: the overlap checks read pointers; the call made them)
            self.forward(new, *call[:4], eps, *call[5:], traced=traced)

        inplace.__signature__ = _signature(self.inplace_params, None)
        mutates = ("x", "residual") + extras
        custom = torch.library.custom_op(f"{self.custom_op}_inplace", inplace, mutates_args=mutates)
        custom.register_fake(lambda *args: None)
        compiled.decompose(custom, self.inplace_params, lambda *a: inplace(*a, traced=True), self.cuda_kernels)
        self.inplace_op = getattr(getattr(torch.ops, namespace), f"{opname}_inplace")

    # Autograd: the functional op carries the backward (dsl/backward.py).

    def autograd_call(self, x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd):
        """A checked call that needs a gradient: the functional op, asked for the statistics the backward needs."""
        values = {"x": x, "residual": residual, "weight": weight, "bias": bias, "eps": eps, "norm_pos": norm_pos}
        asked = {"mean": return_mean or "mean" in self.saved, "rstd": return_rstd or "rstd" in self.saved}
        values.update(return_mean=asked["mean"], return_rstd=asked["rstd"])
        new = self.functional_op(*[values[p] for p in self.call_params])
        slots = self.slots(new, x, residual, norm_pos, asked["mean"], asked["rstd"], False)
        return self.public(slots, return_mean, return_rstd)

    def _arguments(self, given: dict, inplace: bool) -> tuple:
        """The nine arguments of a call from the custom op's named ones."""
        names = INPUTS + ("eps", "norm_pos", "return_mean", "return_rstd")
        return tuple(given.get(p, False if p.startswith("return_") else None) for p in names) + (inplace,)


class _Form:
    """One call form of an op for the fast path: residual mode, statistics asked, in place or not.

    ``outputs(x, residual, record)`` allocates a call's outputs and returns its slots
    (out, residual_out, scale, mean, rstd), what the op returns and the inputs that the
    kernels write in place. Which slot is which tensor comes from ``Op.slots``, asked
    once here with stand-ins, so the fast path allocates, writes and returns what the
    checked path does (tests/test_surface.py compares the two).
    """

    def __init__(self, op: Op, norm_pos, mean: bool, rstd: bool, inplace: bool):
        self.norm_pos, self.mean, self.rstd, self.inplace = norm_pos, mean, rstd, inplace
        self.records: dict[tuple, _Record] = {}  # (x's shape, dtype, device, bias is None, weight's dtype) -> record
        x, residual = object(), object()
        slots = op.slots([object() for _ in range(5)], x, residual, norm_pos, mean, rstd, inplace)
        write_x, write_residual = (inplace and any(s is t for s in slots) for t in (x, residual))
        if write_x:
            written = (lambda x, r: (x, r)) if write_residual else (lambda x, r: (x,))
        else:
            written = (lambda x, r: (r,)) if write_residual else None
        if op.quant_storage is not None:
            self.outputs = self._checked_outputs(op, written)
        else:
            out, residual_out = slots[:2]
            residual_out_is = "x" if residual_out is x else "residual" if residual_out is residual else None
            if residual_out is not None and residual_out_is is None:
                residual_out_is = "out" if residual_out is out else "new"
            self.outputs = self._plain_outputs(op, out is x, residual_out_is, written)

    def _checked_outputs(self, op: Op, written):
        """Quantized ops: the checked path's own allocation, slots and result."""
        norm_pos, mean, rstd, inplace = self.norm_pos, self.mean, self.rstd, self.inplace

        def outputs(x, residual, rec):
            slots = op.slots(
                op.new_outputs(x, norm_pos, mean, rstd, inplace), x, residual, norm_pos, mean, rstd, inplace
            )
            return slots, op.public(slots, mean, rstd), written(x, residual) if written else ()

        return outputs

    def _plain_outputs(self, op: Op, out_is_x: bool, residual_out_is: str | None, written):
        """Ops whose output is like x: at most two tensors like x, the statistics; straight-line code."""
        like, has_residual, mean, rstd = torch.empty_like, op.has_residual, self.mean, self.rstd
        stats_dtype = op.stats_dtype  # None: x's dtype

        if not (mean or rstd or written):  # the common forms, in the fewest steps
            if residual_out_is == "new":
                return lambda x, residual, rec: ((out := like(x), new := like(x), None, None, None), (out, new), ())
            if residual_out_is == "out":
                return lambda x, residual, rec: ((out := like(x), out, None, None, None), (out, out), ())
            if residual_out_is is None:
                return lambda x, residual, rec: ((out := like(x), None, None, None, None), out, ())

        def outputs(x, residual, rec):
            out = x if out_is_x else like(x)
            if residual_out_is is None:
                residual_out = None
            elif residual_out_is == "new":
                residual_out = like(x)
            elif residual_out_is == "out":
                residual_out = out
            else:
                residual_out = x if residual_out_is == "x" else residual
            result = (out, residual_out) if has_residual else (out,)
            m = r = None
            if mean:
                m = x.new_empty(*rec.rows, dtype=stats_dtype or x.dtype)
                result += (m,)
            if rstd:
                r = x.new_empty(*rec.rows, dtype=stats_dtype or x.dtype)
                result += (r,)
            slots = (out, residual_out, None, m, r)
            return slots, result[0] if len(result) == 1 else result, written(x, residual) if written else ()

        return outputs


class _Record:
    """What the fast path knows of one call form at one shape, dtype and device (see ``Op._record``)."""

    __slots__ = ("n_rows", "param_shape", "rows", "device_index", "nbytes", "launcher", "key", "args", "tail")
    __slots__ += ("stream", "direct")

    def __init__(self, n_rows, param_shape, rows_shape, device, nbytes, launcher, layout, tail, stream):
        self.n_rows, self.param_shape, self.device_index, self.nbytes = n_rows, param_shape, device.index, nbytes
        self.rows = tuple(rows_shape) or ((),)  # x.shape[:-1] as new_empty's positional sizes (faster than a Size)
        self.launcher, self.tail, self.args = launcher, tail, layout.args
        self.key = layout.key((None,) * runtime.PER_CALL + tail)  # the launch key follows from the tail
        self.stream = stream  # cuda: the current stream's getter; None: no direct launch (npu)
        self.direct = None  # the launcher's direct launch of the key, once it has one


class Norm(torch.nn.Module):
    """The module of an op without a residual; a generated subclass sets ``op`` and its constructor."""

    op: Op

    def __init__(self, hidden_size, eps, norm_pos=None, bias=False, *, device=None, dtype=None):
        super().__init__()
        op = self.op
        if op.has_residual:
            checks.check_choice(op.name, "norm_pos", norm_pos, op.modes)
        self.hidden_size = hidden_size
        self.eps = eps
        if op.has_residual:
            self.norm_pos = norm_pos
        if op.has_weight:
            self.weight = torch.nn.Parameter(torch.empty(hidden_size, device=device, dtype=dtype))
        if op.has_bias:
            if bias:
                self.bias = torch.nn.Parameter(torch.empty(hidden_size, device=device, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.op.has_weight:
            torch.nn.init.constant_(self.weight, self.op.weight_init)
        if self.op.has_bias and self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def forward(self, x):
        weight, bias = self._parameters_now()
        return self.op(x, None, weight, bias, self.eps, None, False, False, False)

    def _parameters_now(self) -> tuple:
        """(weight, bias), None where the op has none: read from nn.Module's parameter dict.

        ``self.weight`` would find a parameter only through nn.Module.__getattr__, after
        the ordinary attribute lookup failed: slow for a per-call read. Where the name is
        not in the dict (e.g. a parametrization made it a property), the attribute is read.
        """
        op, params = self.op, self._parameters
        weight = bias = None
        if op.has_weight and (weight := params.get("weight", _ABSENT)) is _ABSENT:
            weight = self.weight
        if op.has_bias and (bias := params.get("bias", _ABSENT)) is _ABSENT:
            bias = self.bias
        return weight, bias

    def extra_repr(self):
        text = f"{self.hidden_size}, eps={self.eps}"
        if self.op.has_residual:
            text += f", norm_pos={self.norm_pos!r}"
        if self.op.has_bias:
            text += f", bias={self.bias is not None}"
        return text


class AddNorm(Norm):
    """The module of an op with a residual: forward(x, residual)."""

    def forward(self, x, residual):
        weight, bias = self._parameters_now()
        return self.op(x, residual, weight, bias, self.eps, self.norm_pos, False, False, False)
