"""The op module's view of a spec: what ``templates/op.py.jinja`` and the reference print.

Target-independent. The kernel arguments and launch key of each residual mode
come from the forward kernels' ABI (``dsl/abi.py``), in kernel order.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import names
from .abi import Kind, Param, Source
from .model import QUANT_STORAGE_DTYPE, QUANT_TORCH_DTYPE, TORCH_DTYPE, Casting, NormSpec, ResidualMode, format_number
from .plan import KernelFacts, forward_signature, kernel_facts, writes_residual_out

# The op module's expression for each value a call passes (its locals).
_SWITCH_EXPRESSIONS = {
    Source.BIAS_GIVEN: "bias is not None",
    Source.MEAN_ASKED: "mean is not None",
    Source.RSTD_ASKED: "rstd is not None",
}


def op_expression(param: Param, mode: ResidualMode | None) -> str:
    """What the op passes for a parameter of the call, in a call of residual mode ``mode``."""
    if param.kind is Kind.ROW_STRIDE:
        return f"{param.source.value}_stride"
    if param.source is Source.MODE_PRE:
        return str(mode is ResidualMode.PRE)
    return _SWITCH_EXPRESSIONS.get(param.source, param.source.value)


@dataclass(frozen=True)
class ModeLaunch:
    """How the op launches the kernels of one residual mode."""

    mode: str  # "pre", "post" or "none"
    new_residual_out: bool  # pre, or post with a quantized y: a second tensor is written
    args: tuple[str, ...]  # expressions, in kernel order: every parameter the call passes
    key: tuple[str, ...]  # launch-key expressions after x's dtype (ABI order)


def mode_launch(spec: NormSpec, mode: ResidualMode | None) -> ModeLaunch:
    signature = forward_signature(spec, vector_width=False)  # the call's parameters are the same on every target
    args = tuple(op_expression(p, mode) for p in signature.call)
    key = tuple(op_expression(p, mode) for p in signature.key)
    token = mode.value if mode else "none"
    return ModeLaunch(token, writes_residual_out(spec, mode), args, key)


@dataclass(frozen=True)
class OpPlan:
    """What the op module and the reference print for one spec."""

    spec: NormSpec
    namespace: str  # torch.library namespace of the custom op

    @property
    def facts(self) -> KernelFacts:
        return kernel_facts(self.spec)

    @property
    def launches(self) -> tuple[ModeLaunch, ...]:
        return tuple(mode_launch(self.spec, mode) for mode in self.spec.residual or (None,))

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(mode.value for mode in self.spec.residual)

    @property
    def default_mode(self) -> str:
        return self.spec.residual[0].value if self.spec.residual else ""

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(target.value for target in self.spec.targets)

    @property
    def eps(self) -> str:
        return format_number(self.spec.eps)

    @property
    def stats_dtype(self) -> str:
        """mean and rstd: fp32, or the input dtype for casting none."""
        return "x.dtype" if self.spec.casting is Casting.NONE else "torch.float32"

    @property
    def quant_storage_dtype(self) -> str:
        return QUANT_STORAGE_DTYPE.get(self.spec.quantize, "")

    @property
    def quant_dtype(self) -> str:
        return QUANT_TORCH_DTYPE.get(self.spec.quantize, "")

    @property
    def quant_views_storage(self) -> bool:
        return self.quant_storage_dtype != self.quant_dtype

    @property
    def reference(self) -> str:
        return names.reference_function(self.spec)

    @property
    def reference_module(self) -> str:
        return names.reference_module(self.spec)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The op's return values, in order (optional ones last)."""
        result = ["q" if self.spec.is_quantized else "y"]
        if self.spec.has_residual:
            result.append("residual_out")
        if self.spec.is_quantized:
            result.append("scale")
        if self.spec.stores_mean:
            result.append("mean")
        if self.spec.stores_rstd:
            result.append("rstd")
        return tuple(result)

    # Parameter lists of the op module's functions.
    @property
    def call_args(self) -> tuple[str, ...]:
        """Tensor inputs, eps, and the per-call switches (the custom op's parameters)."""
        spec = self.spec
        names_ = ["x"] + ["residual"] * spec.has_residual + ["weight"] * spec.has_weight + ["bias"] * spec.has_bias
        names_ += ["eps"] + ["norm_pos"] * spec.has_residual
        names_ += ["return_mean"] * spec.stores_mean + ["return_rstd"] * spec.stores_rstd
        return tuple(names_)

    @property
    def param_tensors(self) -> tuple[str, ...]:
        spec = self.spec
        return tuple(["residual"] * spec.has_residual + ["weight"] * spec.has_weight + ["bias"] * spec.has_bias)

    @property
    def grad_tensors(self) -> str:
        """The op's tensor arguments as a dict display, for the no-gradient check."""
        return "{" + ", ".join(f'"{name}": {name}' for name in ("x", *self.param_tensors)) + "}"

    @property
    def forward_args(self) -> tuple[str, ...]:
        return self.call_args + ("inplace",) * self.spec.has_residual

    @property
    def inplace_extras(self) -> tuple[str, ...]:
        """The new tensors of an in-place call, passed to the in-place custom op to fill."""
        spec = self.spec
        return tuple(["q", "scale"] * spec.is_quantized + ["mean"] * spec.stores_mean + ["rstd"] * spec.stores_rstd)

    @property
    def inplace_call_args(self) -> tuple[str, ...]:
        """x, residual, parameters, eps, norm_pos, then the extras (from `new`, in order)."""
        base = [a for a in self.call_args if not a.startswith("return_")]
        return tuple(base) + tuple(self.inplace_extras)

    @property
    def inplace_mutates(self) -> tuple[str, ...]:
        return ("x", "residual") + self.inplace_extras

    @property
    def inplace_typed_params(self) -> tuple[str, ...]:
        typed = {name.split(":")[0]: name for name in self.typed_params}
        result = [typed[a] for a in self.call_args if not a.startswith("return_")]
        for extra in self.inplace_extras:
            optional = extra in ("mean", "rstd")
            result.append(f"{extra}: torch.Tensor{' | None' if optional else ''}")
        return tuple(result)

    @property
    def typed_params(self) -> tuple[str, ...]:
        types = {
            "x": "torch.Tensor",
            "residual": "torch.Tensor",
            "weight": "torch.Tensor",
            "bias": "torch.Tensor | None",
            "eps": "float",
            "norm_pos": "str",
            "return_mean": "bool",
            "return_rstd": "bool",
        }
        return tuple(f"{name}: {types[name]}" for name in self.call_args)

    @property
    def check_params(self) -> tuple[str, ...]:
        spec = self.spec
        names_ = ["x"] + ["residual"] * spec.has_residual + ["weight"] * spec.has_weight + ["bias"] * spec.has_bias
        return tuple(names_ + ["eps"] + ["norm_pos", "inplace"] * spec.has_residual)

    @property
    def flags(self) -> tuple[str, ...]:
        """The per-call switches that decide which outputs exist."""
        spec = self.spec
        return tuple(
            ["norm_pos"] * spec.has_residual
            + ["return_mean"] * spec.stores_mean
            + ["return_rstd"] * spec.stores_rstd
            + ["inplace"] * spec.has_residual
        )

    @property
    def alloc_args(self) -> tuple[str, ...]:
        return ("x",) + self.flags

    @property
    def slot_args(self) -> tuple[str, ...]:
        return ("x",) + ("residual",) * self.spec.has_residual + self.flags

    @property
    def stride_locals(self) -> tuple[str, ...]:
        """The row-stride locals the launch reads."""
        names_ = ["x_stride", "out_stride"]
        if self.spec.has_residual:
            names_ += ["residual_stride"]
        if any(launch.new_residual_out for launch in self.launches):
            names_ += ["residual_out_stride"]
        return tuple(names_)

    @property
    def align_expression(self) -> str:
        """OR of the input pointers whose alignment the launch key records."""
        terms = ["x.data_ptr()"] + ["residual.data_ptr()"] * self.spec.has_residual
        terms += ["weight.data_ptr()"] * self.spec.has_weight
        terms += ["(0 if bias is None else bias.data_ptr())"] * self.spec.has_bias
        return " | ".join(terms)

    @property
    def norm_pos_doc(self) -> tuple[str, ...]:
        """One docstring line per residual mode the spec has (and only those)."""
        lines = {
            ResidualMode.PRE: "pre: s = x + residual; returns norm(s) and s.",
            ResidualMode.POST: "post: returns norm(x + residual) and, as the residual out, "
            + ("the unquantized norm in x's dtype." if self.spec.is_quantized else "that same tensor."),
        }
        return tuple(lines[mode] for mode in self.spec.residual)

    @property
    def inplace_doc(self) -> str:
        """What an in-place call writes, for the spec's residual modes only."""
        quantized = self.spec.is_quantized
        parts = {
            ResidualMode.PRE: "pre mode puts s in residual" + ("" if quantized else " and the output in x"),
            ResidualMode.POST: "post mode puts the " + ("unquantized " if quantized else "") + "output in x",
        }
        return ", ".join(parts[mode] for mode in self.spec.residual) + "."

    @property
    def new_residual_modes(self) -> tuple[str, ...]:
        """Modes whose residual out is a tensor of its own when not in place."""
        return tuple(m.value for m in self.spec.residual if writes_residual_out(self.spec, m))

    @property
    def module_class(self) -> str:
        return names.module_class(self.spec)

    @property
    def custom_op(self) -> str:
        return names.custom_op(self.namespace, self.spec)

    @property
    def weight_init(self) -> str:
        """The weight's initial value: the effective scale (w + offset) starts at 1."""
        return format_number(1.0 - self.spec.weight.offset)

    @property
    def torch_dtype_list(self) -> tuple[str, ...]:
        return tuple(TORCH_DTYPE[d] for d in self.spec.dtypes)

    @property
    def fixed_locals(self) -> tuple[str, ...]:
        """The op's locals returned on every call: out, then residual_out and scale if any."""
        names_ = (
            ["out"]
            + (["residual_out"] if self.spec.has_residual else [])
            + (["scale"] if self.spec.is_quantized else [])
        )
        return tuple(names_)

    @property
    def returns_doc(self) -> str:
        text = self.outputs[0] if self.single_output else "(" + ", ".join(self.outputs) + ")"
        if self.spec.stores_mean or self.spec.stores_rstd:
            text += "; the optional statistics are appended only when asked for"
        return text + "."

    @property
    def single_output(self) -> bool:
        return len(self.outputs) == 1


def op_plan(spec: NormSpec, namespace: str) -> OpPlan:
    return OpPlan(spec, namespace)
