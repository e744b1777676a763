"""The op module's view of a spec: what ``templates/op.py.jinja`` and the reference print.

Target-independent. The op module is the public function (signature and
docstring), the module class and the descriptor ``surface.Op`` reads; the
kernels' arguments and launch key come at run time from the kernel module's ABI.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import names
from .model import QUANT_STORAGE_DTYPE, QUANT_TORCH_DTYPE, TORCH_DTYPE, Casting, NormSpec, ResidualMode, format_number
from .plan import KernelFacts, kernel_facts, writes_residual_out


@dataclass(frozen=True)
class OpPlan:
    """What the op module and the reference print for one spec."""

    spec: NormSpec
    namespace: str  # torch.library namespace of the custom op

    @property
    def facts(self) -> KernelFacts:
        return kernel_facts(self.spec)

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
    def returns_doc(self) -> str:
        text = self.outputs[0] if self.single_output else "(" + ", ".join(self.outputs) + ")"
        if self.spec.stores_mean or self.spec.stores_rstd:
            text += "; the optional statistics are appended only when asked for"
        return text + "."

    @property
    def single_output(self) -> bool:
        return len(self.outputs) == 1

    # What the op module prints: the descriptor, the public function, the module class.
    @property
    def inputs(self) -> tuple[str, ...]:
        """The tensor arguments, in the public function's order."""
        spec = self.spec
        return ("x",) + ("residual",) * spec.has_residual + ("weight",) * spec.has_weight + ("bias",) * spec.has_bias

    @property
    def stats(self) -> tuple[str, ...]:
        """The statistics a call may ask for (return_mean, return_rstd)."""
        return ("mean",) * self.spec.stores_mean + ("rstd",) * self.spec.stores_rstd

    @property
    def saved(self) -> tuple[str, ...]:
        """The statistics a training forward saves for the backward (empty: no backward)."""
        return ("mean",) * (self.spec.has_backward and self.spec.kind.has_mean) + ("rstd",) * self.spec.has_backward

    @property
    def stats_dtype_arg(self) -> str:
        """The descriptor's stats_dtype: None for x's dtype."""
        return "None" if self.spec.casting is Casting.NONE else "torch.float32"

    @property
    def kernels(self) -> str:
        """The descriptor's target -> kernel module display."""
        return "{" + ", ".join(f'"{t}": "{names.op_module(self.spec)}_{t}"' for t in self.targets) + "}"

    @property
    def signature(self) -> str:
        """The public function's parameters."""
        spec = self.spec
        params = [p for p in self.inputs if p != "bias"] + ["bias=None"] * spec.has_bias + [f"eps={self.eps}"]
        params += [f'norm_pos="{self.default_mode}"'] * spec.has_residual
        keywords = [f"return_{s}=False" for s in self.stats] + ["inplace=False"] * spec.has_residual
        return ", ".join(params + (["*"] + keywords if keywords else []))

    @property
    def op_args(self) -> tuple[str, ...]:
        """The public function's call of the descriptor: the nine arguments of surface.Op."""
        spec = self.spec
        given = self.inputs + ("eps",) + ("norm_pos",) * spec.has_residual + tuple(f"return_{s}" for s in self.stats)
        every = ("x", "residual", "weight", "bias", "eps", "norm_pos", "return_mean", "return_rstd")
        absent = {"residual": "None", "weight": "None", "bias": "None", "norm_pos": "None"}
        args = tuple(name if name in given else absent.get(name, "False") for name in every)
        return args + ("inplace" if spec.has_residual else "False",)

    @property
    def module_base(self) -> str:
        return "AddNorm" if self.spec.has_residual else "Norm"

    @property
    def module_signature(self) -> str:
        spec = self.spec
        params = ["self", "hidden_size", f"eps={self.eps}"] + [f'norm_pos="{self.default_mode}"'] * spec.has_residual
        return ", ".join(params + ["bias=True"] * spec.has_bias + ["*", "device=None", "dtype=None"])

    @property
    def module_args(self) -> tuple[str, ...]:
        spec = self.spec
        args = ["hidden_size", "eps"] + ["norm_pos=norm_pos"] * spec.has_residual + ["bias=bias"] * spec.has_bias
        return tuple(args + ["device=device", "dtype=dtype"])


def op_plan(spec: NormSpec, namespace: str) -> OpPlan:
    return OpPlan(spec, namespace)
