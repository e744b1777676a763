"""The op surface (hand-written): everything a generated op does around its kernels.

A generated op module holds its public function (signature and docstring from
the spec), its module class (a subclass of ``Norm`` or ``AddNorm``, from
``dsl/modules.py``) and an ``Op``: the descriptor of what varies per spec
(tensor inputs, dtypes, residual modes, outputs and statistics, quantization,
the reference, the kernels' modules). Calling the ``Op`` runs the op:

* a fast path for the common eager call (contiguous cuda or npu tensors that
  need no gradient, functional or in place, not compiling), proven valid with a
  few attribute reads; what does not change between calls is cached
  (``dsl/fast_path.py``): the call's form (``Form``: what it allocates, writes,
  returns) and, per shape, dtype and device, a record (``Record``: launch key,
  fixed arguments, direct launch);
* otherwise every input check (``dsl/checks.py``), then, under torch.compile,
  the custom op (``<namespace>::<op>`` and ``<op>_inplace_<mode>``, registered with
  their fake implementations by ``dsl/custom_ops.py``) so that dynamo records it
  (on cuda, ``dsl/compiled.py`` decomposes it into its Triton kernels; the
  backward is in ``dsl/backward.py``); eagerly, the kernels (or the reference on
  CPU) and the version bumps of in-place writes.

Every call passes all nine arguments of the widest op, ``(x, residual, weight,
bias, eps, norm_pos, return_mean, return_rstd, inplace)``; an op without one
passes None (False for switches). The kernels' arguments and launch key come
from the kernel module's ABI (``dsl/abi.py``) through ``launch_layout.layout``.

On cuda, the C++ host path (``dsl/host.py``, ``dsl/host.cpp``) serves a common call before any
of this, once the fast path has launched it (its record handed over by ``_native_record``); it
returns None for any call it cannot prove, and the call goes on here.

This module, ``modules``, ``fast_path``, ``host``, ``custom_ops``, ``backward``, ``compiled``,
``checks``, ``launch_layout``, ``runtime``, ``dispatch``, ``abi`` and ``device`` are all
a built package needs at run time: none of them imports the generator (Lark, Jinja2).
"""

from __future__ import annotations

import importlib

import torch
from torch.autograd import forward_ad

from . import checks, compiled, host, launch_layout, runtime
from .checks import EPS_MAX as _EPS_MAX
from .checks import NormgenError
from .custom_ops import autograd_call, compiling_call, compiling_entry, register
from .fast_path import Form, Record
from .launch_layout import launch_tail
from .modules import AddNorm as AddNorm  # public here: the generated module classes subclass surface.Norm,
from .modules import Norm as Norm  # surface.AddNorm

_is_compiling = torch.compiler.is_compiling  # (dynamo knows the function, whatever its name here)
_is_tracing = torch._C._is_tracing  # torch.jit.trace: it records dispatcher ops, never a direct launch


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
        # The C++ host path's twin of this op (dsl/host.py), made at its first record; ``native`` is the
        # twin that calls try first (None: the Python path only; tests set it so to compare the two).
        self.twin = self.native = None
        register(self)  # the custom ops (dsl/custom_ops.py)
        self._compiling = compiling_entry(self)  # the lean call under torch.compile (None: the checked one)
        # the fast path's call forms: (norm_pos, return_mean, return_rstd, inplace) -> Form
        self._forms = {
            (norm_pos, mean, rstd, inplace): Form(self, norm_pos, mean, rstd, inplace)
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
            layouts = {m: launch_layout.layout(launcher.abi, m, backward) for m in self.call_modes}
            launch = self._launches[target, backward] = (launcher, layouts)
        return launch

    def cuda_kernels(self, backward: bool = False) -> list:
        """The op's cuda Triton kernels of a direction (dsl/compiled.py names them to torch)."""
        return list(self.kernel_launch("cuda", backward)[0].kernels.values()) if "cuda" in self.kernels else []

    def _record(self, form: Form, x, bias, pdtype) -> Record | None:
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
        if not checks.is_dense(x):  # (the checks name it; a nested shape has no record)
            return None
        if not checks.takes_params(dtype, pdtype):
            return None
        shape = x.shape
        n_cols = shape[-1]
        n_rows = x.numel() // n_cols
        launcher, layouts = self.kernel_launch(device.type)
        layout = layouts[form.norm_pos]
        tail = launch_tail((n_cols,) * 4, n_rows, n_cols, bias is not None, form.mean, form.rstd, dtype, pdtype)
        stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) if device.type == "cuda" else None
        rec = Record(
            n_rows, (n_cols,), shape[:-1], device, x.numel() * x.element_size(), launcher, layout, tail, stream
        )
        return runtime.remember(form.records, (shape, dtype, device, bias is None, pdtype), rec)

    def _launch(self, rec: Record, x, residual, weight, bias, slots, eps, aligned: bool) -> None:
        """The fast path's launch through the launcher (the first of a record, unaligned, npu); then the
        record takes the direct launch the launcher may have made."""
        rec.launcher(rec.key, aligned, rec.device_index, rec.args((x, residual, weight, bias, *slots, eps) + rec.tail))
        if aligned and rec.stream is not None and rec.direct is None:
            rec.direct = rec.launcher.cached_launch(rec.key, rec.device_index)

    def _native_record(self, rec: Record, form: Form, shape, dtype, device, bias_none: bool, pdtype) -> bool | None:
        """Hand a record's direct launch to the C++ host path (dsl/host.py): True once it serves the
        record, False where it never will, None while the extension builds."""
        if host.module() is None:
            return False if host.failed() else None
        return host.register(self, form, rec, shape, dtype, device, bias_none, pdtype)

    def __call__(self, x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace):
        compiling = _is_compiling()
        if compiling:
            # torch.compile traces this: plainly valid inputs take a call that dynamo needs few guards for
            if (entry := self._compiling) is not None:
                result = entry(x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace)
                if result is not None:
                    return result
        elif (native := self.native) is not None and forward_ad._current_level < 0:
            # The C++ host path (dsl/host.py) serves the calls whose launch the Python fast path below
            # has made once; it returns None for any other call.
            result = native(x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace)
            if result is not None:
                return result
        try:
            # The common eager call, proven valid with a few attribute reads: its form (mode,
            # statistics, in place) and a record of x's shape, dtype, device and weight dtype
            # (``_record``) are cached; the tensors are contiguous, on that device, in those dtypes
            # and need no gradient. Anything else (or any doubt) takes the full checks below, which
            # name the problem. Under torch.compile the custom op (below) is recorded instead.
            fast = (
                not compiling
                and not _is_tracing()
                and forward_ad._current_level < 0  # (no dual level open: no input has a tangent)
                and (form := self._forms.get((norm_pos, return_mean, return_rstd, inplace))) is not None
                and type(eps) is float
                and 0.0 <= eps <= _EPS_MAX
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
                and not x.is_neg()  # (a lazily negated view: its memory holds the negatives)
                and not ((grad := torch.is_grad_enabled()) and x.requires_grad)
                and (
                    not self.has_residual
                    or residual.shape == shape
                    and residual.dtype is dtype
                    and residual.device == device
                    and residual.is_contiguous()
                    and not residual.is_neg()
                    and not (grad and residual.requires_grad)
                )
                and (
                    not self.has_weight
                    or weight.shape == rec.param_shape
                    and weight.device == device
                    and weight.is_contiguous()
                    and not weight.is_neg()
                    and not (grad and weight.requires_grad)
                )
                and (
                    bias is None
                    or bias.shape == rec.param_shape
                    and bias.dtype is pdtype
                    and bias.device == device
                    and bias.is_contiguous()
                    and not bias.is_neg()
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
                # inference mode; and no parameter may lie in what the kernels write.
                # (The checks refuse what this does not prove.)
                fast = not inplace or (
                    abs(xp - rp) >= rec.nbytes
                    and (torch.is_inference_mode_enabled() or not (x.is_inference() or residual.is_inference()))
                    and (wp is None or _apart(wp, weight.nbytes, xp, rp, rec.nbytes))
                    and (bp is None or _apart(bp, bias.nbytes, xp, rp, rec.nbytes))
                )
        except (AttributeError, IndexError, TypeError, RuntimeError):  # (RuntimeError: a tensor without storage)
            fast = False
        if fast:
            slots, result, written = form.outputs(x, residual, rec)
            if rec.n_rows:
                aligned = aligned & 15 == 0
                direct = rec.direct
                # (the direct launch goes to the current device: the record's device must be it)
                if (
                    direct is not None
                    and aligned
                    and (rec.one_device or runtime.current_cuda_device() == rec.device_index)
                ):
                    # the kernel's direct launch; its inputs' pointers go as the ints read above
                    launch, grid, function, prefix, constexprs = direct
                    args = rec.args((xp, rp, wp, bp, *slots, eps) + rec.tail)
                    launch(grid, 1, 1, rec.stream(rec.device_index), function, *prefix, *args, *constexprs)
                    if rec.native is None:
                        rec.native = self._native_record(rec, form, shape, dtype, device, bias is None, pdtype)
                else:
                    self._launch(rec, x, residual, weight, bias, slots, eps, aligned)
            if written:
                # the kernels wrote x (and residual) behind autograd's back, as torch's in-place ops do
                checks.bump_written(written)
            return result
        eps = self.check(x, residual, weight, bias, eps, norm_pos, inplace)
        self.check_stats(return_mean, return_rstd)
        if self.backward and checks.needs_grad(self._named(x, residual, weight, bias)):
            return autograd_call(self, x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd)
        if compiling or _is_tracing():
            # torch.compile (and torch.jit.trace) record the custom op (dsl/custom_ops.py); its body runs
            # when the graph runs. A direct launch would not be recorded: a traced graph would return
            # its outputs unwritten.
            return compiling_call(self, x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace)
        new = self.new_outputs(x, norm_pos, return_mean, return_rstd, inplace)
        slots = self.forward(new, x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace)
        if inplace:
            # the kernels wrote x (and residual) behind autograd's back: bump their versions as torch's in-place ops do
            checks.bump_written(tuple(t for t in (x, residual) if any(o is t for o in slots) and not t.is_inference()))
        return self.public(slots, return_mean, return_rstd)

    def check_stats(self, return_mean, return_rstd) -> None:
        """Only statistics the op stores are asked for. (The public functions cannot ask for others; a
        direct ``Op`` call could, and got an uninitialized tensor back.)"""
        checks.check_flags(self.name, return_mean=return_mean, return_rstd=return_rstd)
        for stat, asked in (("mean", return_mean), ("rstd", return_rstd)):
            if asked and stat not in self.stats:
                stored = ", ".join(self.stats) or "none"
                raise NormgenError(f"{self.name} does not return {stat} (the statistics it stores: {stored})")

    def check(self, x, residual, weight, bias, eps, norm_pos, inplace) -> float:
        """Every input check, before anything is allocated or launched; returns eps as a float."""
        name = self.name
        checks.check_flags(name, inplace=inplace)
        # (None, the only norm_pos of an op without a residual, which has no in-place form either)
        checks.check_choice(name, "norm_pos", norm_pos, self.call_modes)
        if inplace and not self.has_residual:
            raise NormgenError(f"{name} has no in-place form: it has no residual to write into")
        checks.check_input(name, x, self.dtypes)
        if self.has_residual:
            checks.check_like(name, "residual", residual, x)
        if self.has_weight:
            checks.check_param(name, "weight", weight, x)
        if self.has_bias and bias is not None:
            checks.check_param(name, "bias", bias, x, weight if self.has_weight else None)
        named = self._named(x, residual, weight, bias)
        if not _is_compiling():  # (dynamo traces through torch.func itself; is_neg() breaks its graph)
            checks.check_not_negated(name, named)
            checks.check_not_transformed(name, named)
            checks.check_no_tangent(name, named)
        if not self.backward:
            checks.check_no_grad(name, named, self.quant_storage is not None)
        elif inplace and checks.needs_grad(named):
            checks.refuse_inplace_grad(name, named)
        if inplace:
            checks.check_inplace(name, x, residual, {"weight": weight, "bias": bias})
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
        env += launch_tail(strides, n_rows, n_cols, *switches, x.dtype, checks.param_dtype(x, weight))
        if traced:
            compiled.launch(compiled.decide(launcher, layout.key(env), x.get_device()), layout.args(env))
            return slots
        aligned = x.data_ptr()
        for t in (residual, weight, bias):
            if t is not None:
                aligned |= t.data_ptr()
        launcher(layout.key(env), aligned & 15 == 0, x.get_device(), layout.args(env))
        return slots


def _apart(p: int, p_bytes: int, xp: int, rp: int, nbytes: int) -> bool:
    """A parameter's bytes [p, p + p_bytes) meet neither x's nor residual's [xp, xp + nbytes), [rp, rp + nbytes)."""
    return (p + p_bytes <= xp or p >= xp + nbytes) and (p + p_bytes <= rp or p >= rp + nbytes)
