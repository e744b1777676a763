"""The module base classes of the generated ops (hand-written): ``Norm`` and ``AddNorm``.

A generated op module's class (``generated/<op>.py``) subclasses one of them (through
``surface.Norm`` and ``surface.AddNorm``, re-exported there) and sets ``op``, its
``Op`` (``dsl/surface.py``), and its constructor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.autograd import forward_ad

from . import checks

if TYPE_CHECKING:
    from .surface import Op

_ABSENT = object()  # a name missing from a dict
_is_compiling = torch.compiler.is_compiling


class Norm(torch.nn.Module):
    """The module of an op without a residual; a generated subclass sets ``op`` and its constructor."""

    op: Op
    # Called as dtype_rule(module, x) before every call where set: what it returns, unless None, is
    # the call's result (swap_norms sets one that runs the replaced layer on input of another dtype
    # than the weight); the C++ twin serves only calls of one dtype then.
    dtype_rule = None

    def __init__(self, hidden_size, eps, norm_pos=None, bias=False, *, device=None, dtype=None):
        super().__init__()
        op = self.op
        # what no call could take is refused here, where it is given, not at every call
        if op.has_residual:
            checks.check_choice(op.name, "norm_pos", norm_pos, op.modes)
        checks.check_hidden_size(op.name, hidden_size)
        if eps is None:
            raise TypeError(
                f"{op.name}: eps must be a number, got None (torch.nn.RMSNorm's eps=None, the input dtype's "
                "machine epsilon, is not taken: pass the number)"
            )
        eps = checks.check_eps(op.name, eps)
        if (
            (op.has_weight or op.has_bias)
            and dtype is not None
            and not any(checks.takes_params(d, dtype) for d in op.dtypes)
        ):
            allowed = ", ".join(str(d) for d in op.dtypes)
            half = " (or torch.float32, with 16-bit input)" if any(d in checks.HALF for d in op.dtypes) else ""
            raise checks.NormgenError(
                f"{op.name}: parameters of dtype {dtype}, which no call could take: the op is generated for "
                f"{allowed}{half}"
            )
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
        return self._run(x, None, None)

    def _run(self, x, residual, norm_pos):
        """The op on x (and residual) with the module's parameters and eps.

        Where the op has a C++ twin (dsl/host.py), the parameters go to it straight from nn.Module's
        parameter dict, without ``Op.__call__`` in between (which would call the twin first too).
        ``__call__`` serves plain module calls before this; those that come here have hooks, or
        call ``forward`` directly. Dynamo never reads the twin.
        """
        op = self.op
        if (rule := self.dtype_rule) is not None and (own := rule(self, x)) is not None:
            return own
        if not _is_compiling() and forward_ad._current_level < 0 and (native := op.native) is not None:
            params = self._parameters
            weight = params.get("weight", _ABSENT) if op.has_weight else None
            bias = params.get("bias", _ABSENT) if op.has_bias else None
            if weight is not _ABSENT and bias is not _ABSENT:  # (else a parametrization: read below)
                result = native(x, residual, weight, bias, self.eps, norm_pos, False, False, False)
                if result is not None:
                    return result
        weight, bias = self._parameters_now()
        return op(x, residual, weight, bias, self.eps, norm_pos, False, False, False)

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
        return self._run(x, residual, self.norm_pos)


def _call_with_twin(self, *args, **kwargs):
    """A module's call once C++ twins exist (``serve_module_calls``). Where the op's twin
    (dsl/host.py) proves that nn.Module's __call__ would only call the class's own forward (no hook
    anywhere, no ``module.compile()``, no forward set on the instance or overridden by a subclass),
    the twin serves the call itself: nn.Module's call frames cost 1-2.7 µs per call on the GPU
    machine (README, "The C++ host path"). Anything else it declines (None), and nn.Module's
    __call__ runs as ever; so does a call that ``dtype_rule`` would see with x in another dtype than
    the weight. Under torch.compile, Dynamo traces nn.Module's __call__."""
    if not kwargs and not _is_compiling() and forward_ad._current_level < 0 and (native := self.op.native) is not None:
        result = native.call_module(self, *args)
        if result is not None:
            return result
    return torch.nn.Module.__call__(self, *args, **kwargs)  # (looked up per call: torch.fx patches it)


def serve_module_calls() -> None:
    """Module calls try the C++ twin first (``_call_with_twin``): dsl/host.py calls this when it makes
    the first twin. Until then (and in a process that never makes one: the npu target, the Python
    host path) the modules keep nn.Module's own __call__, a frame shorter than one that would only
    find no twin and pass the call on."""
    Norm.__call__ = _call_with_twin
