"""The op surface (hand-written): everything a generated op does around its kernels.

A generated op module holds its public function (signature and docstring from
the spec), its module class and an ``Op``: the descriptor of what varies per spec
(tensor inputs, dtypes, residual modes, outputs and statistics, quantization,
the reference, the kernels' modules). Calling the ``Op`` runs the op:

* a fast path for the common eager call (contiguous CUDA tensors that need no
  gradient, not in place, not compiling), proven valid with a few attribute reads;
* otherwise every input check (``dsl/checks.py``), then, under torch.compile,
  the custom op (``<namespace>::<op>`` and ``<op>_inplace``, registered here
  with their fake implementations) so that dynamo records it; eagerly, the
  kernels (or the reference on CPU) and the version bumps of in-place writes.

Every call passes all nine arguments of the widest op, ``(x, residual, weight,
bias, eps, norm_pos, return_mean, return_rstd, inplace)``; an op without one
passes None (False for switches). The kernels' arguments and launch key come
from the kernel module's ABI (``dsl/abi.py``) through ``runtime.layout``.

This module, ``checks``, ``runtime``, ``abi`` and ``device`` are all a built
package needs at run time: none of them imports the generator (Lark, Jinja2).
"""

from __future__ import annotations

import importlib
import inspect

import torch

from . import checks, runtime
from .checks import NormgenError

_INF = float("inf")
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
        self.reference, self.kernels, self.package = reference, kernels, package
        self.has_residual, self.has_weight, self.has_bias = ("residual" in inputs, "weight" in inputs, "bias" in inputs)
        self._launches: dict[str, tuple] = {}  # target -> (launcher, {mode: layout})
        self._cuda: tuple | None = None
        self._register()

    def kernel_launch(self, target: str) -> tuple:
        """(launcher, {mode: layout}) of a target, importing its kernel module on first use."""
        launch = self._launches.get(target)
        if launch is None:
            if target not in self.kernels:
                have = ", ".join(self.kernels)
                raise NormgenError(f"{self.name} is not generated for the {target} target (it has: {have})")
            launcher = importlib.import_module(f".{self.kernels[target]}", self.package).LAUNCHER
            launch = self._launches[target] = (launcher, {m: runtime.layout(launcher.abi, m) for m in self.call_modes})
            if target == "cuda":
                self._cuda = launch
        return launch

    def __call__(self, x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace):
        try:
            # The common eager call, proven valid with a few attribute reads; anything
            # else (or any doubt) takes the full checks below, which name the problem.
            fast = (
                type(eps) is float
                and 0.0 <= eps < _INF
                and not inplace
                and norm_pos in self.call_modes
                and x.is_cuda
                and (dtype := x.dtype) in self.dtypes
                and (n_cols := (shape := x.shape)[-1]) > 0
                and x.is_contiguous()
                and not x.requires_grad
                and (device := x.get_device()) >= 0
                and (
                    not self.has_residual
                    or residual.is_cuda
                    and residual.dtype is dtype
                    and residual.shape == shape
                    and residual.is_contiguous()
                    and not residual.requires_grad
                    and residual.get_device() == device
                )
                and (
                    not self.has_weight
                    or weight.is_cuda
                    and weight.dtype is dtype
                    and weight.shape == (n_cols,)
                    and weight.is_contiguous()
                    and not weight.requires_grad
                    and weight.get_device() == device
                )
                and (
                    bias is None
                    or bias.is_cuda
                    and bias.dtype is dtype
                    and bias.shape == (n_cols,)
                    and bias.is_contiguous()
                    and not bias.requires_grad
                    and bias.get_device() == device
                )
                and not torch.compiler.is_compiling()
            )
        except (AttributeError, IndexError, TypeError):
            fast = False
        if fast:
            # contiguous rows of n_cols elements on one CUDA device, no gradient needed: allocate and launch
            new = self.new_outputs(x, norm_pos, return_mean, return_rstd, False)
            slots = self.slots(new, x, residual, norm_pos, return_mean, return_rstd, False)
            n_rows = x.numel() // n_cols
            if n_rows:
                launcher, layouts = self._cuda or self.kernel_launch("cuda")
                key, args = layouts[norm_pos]
                out, residual_out, scale, mean, rstd = slots
                env = (x, residual, weight, bias, out, residual_out, scale, mean, rstd, n_cols, n_cols, n_cols, n_cols)
                env += (n_rows, n_cols, eps, bias is not None, mean is not None, rstd is not None, True, False, dtype)
                aligned = x.data_ptr()
                if residual is not None:
                    aligned |= residual.data_ptr()
                if weight is not None:
                    aligned |= weight.data_ptr()
                if bias is not None:
                    aligned |= bias.data_ptr()
                launcher(key(env), aligned & 15 == 0, device, args(env))
            return self.public(slots, return_mean, return_rstd)
        eps = self.check(x, residual, weight, bias, eps, norm_pos, inplace)
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
            checks.bump_written((x, residual), slots)
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
            checks.check_param(name, "bias", bias, x)
        checks.check_no_grad(name, self._named(x, residual, weight, bias))
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

    def forward(self, new, x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace) -> tuple:
        """Compute the outputs of checked inputs into `new` (and, in place, into x and residual); returns the slots."""
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
        key, args = layouts[norm_pos]
        env = (x, residual, weight, bias, out, residual_out, scale, mean, rstd)
        env += (x_stride, residual_stride, out_stride, residual_out_stride, n_rows, n_cols, eps)
        env += (bias is not None, mean is not None, rstd is not None, True, False, x.dtype)
        aligned = x.data_ptr()
        for t in (residual, weight, bias):
            if t is not None:
                aligned |= t.data_ptr()
        launcher(key(env), aligned & 15 == 0, x.get_device(), args(env))
        return slots

    # torch.library registration: the functional op and, with a residual, the in-place one.

    def _register(self) -> None:
        self.call_params = tuple(p for p in INPUTS if p in self.inputs) + ("eps",) + ("norm_pos",) * self.has_residual
        self.call_params += tuple(f"return_{s}" for s in self.stats)
        namespace, opname = self.custom_op.split("::")

        def functional(*args):
            given = dict(zip(self.call_params, args, strict=True))
            call = self._arguments(given, inplace=False)
            eps = self.check(*call[:6], False)  # direct torch.ops calls get the op's checks too
            new = self.new_outputs(call[0], *call[5:8], False)
            self.forward(new, *call[:4], eps, *call[5:])
            return new

        def fake(*args):
            given = dict(zip(self.call_params, args, strict=True))
            call = self._arguments(given, inplace=False)
            return self.new_outputs(call[0], *call[5:8], False)

        functional.__signature__ = _signature(self.call_params, list[torch.Tensor])
        custom = torch.library.custom_op(self.custom_op, functional, mutates_args=())
        custom.register_fake(fake)
        self.functional_op = getattr(getattr(torch.ops, namespace), opname)
        if not self.has_residual:
            return
        extras = ("q", "scale") * (self.quant_storage is not None) + self.stats
        self.inplace_params = tuple(p for p in self.call_params if not p.startswith("return_")) + extras

        def inplace(*args):
            given = dict(zip(self.inplace_params, args, strict=True))
            new = [given[p] for p in extras if given[p] is not None]
            given.update({f"return_{s}": given[s] is not None for s in self.stats})
            call = self._arguments(given, inplace=True)
            eps = self.check(*call[:6], True)
            self.forward(new, *call[:4], eps, *call[5:])

        inplace.__signature__ = _signature(self.inplace_params, None)
        mutates = ("x", "residual") + extras
        custom = torch.library.custom_op(f"{self.custom_op}_inplace", inplace, mutates_args=mutates)
        custom.register_fake(lambda *args: None)
        self.inplace_op = getattr(getattr(torch.ops, namespace), f"{opname}_inplace")

    def _arguments(self, given: dict, inplace: bool) -> tuple:
        """The nine arguments of a call from the custom op's named ones."""
        names = INPUTS + ("eps", "norm_pos", "return_mean", "return_rstd")
        return tuple(given.get(p, False if p.startswith("return_") else None) for p in names) + (inplace,)


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
        op = self.op
        weight = self.weight if op.has_weight else None
        return op(x, None, weight, self.bias if op.has_bias else None, self.eps, None, False, False, False)

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
        op = self.op
        weight = self.weight if op.has_weight else None
        bias = self.bias if op.has_bias else None
        return op(x, residual, weight, bias, self.eps, self.norm_pos, False, False, False)
