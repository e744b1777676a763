"""Stage 4: NormSpec x target -> KernelPlan (target-neutral; the target rules live in dsl/targets/).

The planner owns every decision: the kernels of each direction (one per pass),
their typed parameter list (``dsl/abi.py``), the dispatch table (from the
target's rules) and the spec-level facts the templates branch on. Templates
print these decisions and compute nothing. ``plan`` is pure: the pipeline
reads the tuning file and passes its contents in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import abi, kinds, names
from .abi import BACKWARD_DECIDED, FORWARD_DECIDED, Kind, Param, Signature, Source
from .model import (
    QUANT_MAX,
    QUANT_MIN,
    QUANT_STORAGE_TOKEN,
    Casting,
    NormSpec,
    Quantize,
    ResidualMode,
    Target,
    format_number,
)
from .table import DispatchEntry, Grid, Pass, cdiv, merge_rows, next_pow2
from .targets import rules

__all__ = [
    "DispatchEntry",
    "Direction",
    "DirectionPlan",
    "Grid",
    "Kernel",
    "KernelFacts",
    "KernelPlan",
    "Pass",
    "cdiv",
    "next_pow2",
]


class Direction(enum.Enum):
    FORWARD = "forward"
    BACKWARD = "backward"  # gradients of x (and residual), weight and bias from dy (and ds)


@dataclass(frozen=True)
class Kernel:
    """One @triton.jit function: a direction and a pass; masks, grid and VEC are its constexprs."""

    name: str
    direction: Direction
    passes: Pass

    @property
    def single(self) -> bool:
        return self.passes is Pass.SINGLE


@dataclass(frozen=True)
class DirectionPlan:
    """One direction's kernels (one per pass), their parameters and their dispatch table."""

    direction: Direction
    signature: Signature
    kernels: tuple[Kernel, ...]
    table: tuple[DispatchEntry, ...]
    shared: Signature  # the target-neutral parameters: ``signature`` less the target's own constexprs

    def __post_init__(self):
        if self.signature.params[: len(self.shared.params)] != self.shared.params:
            raise ValueError("a target's parameters must extend the target-neutral ones")

    @property
    def extras(self) -> tuple[Param, ...]:
        """The target's own constexprs (VEC, LOOP_STAGES), after the target-neutral parameters."""
        return self.signature.params[len(self.shared.params) :]

    @property
    def backward(self) -> bool:
        return self.direction is Direction.BACKWARD

    @property
    def prefix(self) -> str:
        """The generated module's names of this direction: ABI, TABLE, ... or BACKWARD_ABI, ..."""
        return "BACKWARD_" if self.backward else ""


@dataclass(frozen=True)
class KernelPlan:
    """Everything the target template prints for one spec on one target (the forward's
    signature, kernels and table, and the backward's where the spec has one)."""

    spec: NormSpec
    target: Target
    direction: Direction
    signature: Signature
    kernels: tuple[Kernel, ...]
    table: tuple[DispatchEntry, ...]
    launch_options: tuple[tuple[str, object], ...]  # extra compile options per launch (npu)
    tuning_source: str  # where the table's numbers come from, for the header
    shared: Signature  # the forward's target-neutral parameters (DirectionPlan.shared)
    backward: DirectionPlan | None = None

    @property
    def program_barrier(self) -> bool:
        """The backward's multi-pass kernel separates its read-modify-writes with barriers."""
        return rules(self.target).program_barrier

    @property
    def reads_back_sum(self) -> bool:
        """The forward's multi-pass kernel stores s in pass 1 and reads it back (pre mode)."""
        return rules(self.target).reads_back_sum

    @property
    def fast_quantize(self) -> bool:
        """The quantized kernels use the GPU's forms (dsl/templates/kernel_macros.jinja, Quantization)."""
        return rules(self.target).fast_quantize

    @property
    def eviction_hints(self) -> bool:
        """The multi-pass kernels' loads carry L2 eviction hints (dsl/targets/__init__.py)."""
        return rules(self.target).eviction_hints

    @property
    def split_backward(self) -> bool:
        """The backward's single-pass kernel has a split grid's column programs (SPLIT_N)."""
        return rules(self.target).split_backward

    @property
    def early_ds(self) -> int:
        """The most bits of a ds tile the backward's single pass loads with dy and s (dsl/targets/__init__.py)."""
        return rules(self.target).early_ds

    @property
    def early_sums(self) -> int:
        """Tiles wider than this add to dw's sums before the row's sums (dsl/targets/__init__.py)."""
        return rules(self.target).early_sums

    @property
    def small_offsets(self) -> bool:
        """The backward's single pass takes SMALL_OFFSETS: int32 row offsets where they fit (targets/__init__.py)."""
        return rules(self.target).small_offsets

    @property
    def tile_loop(self) -> str:
        """The backward's loop over its row tiles (persistent grid), pipelined where the target says."""
        if rules(self.target).pipelined_tile_loop:
            return "tl.range(pid, num_tiles, tl.num_programs(0), num_stages=LOOP_STAGES)"
        return "range(pid, num_tiles, tl.num_programs(0))"

    @property
    def directions(self) -> tuple[DirectionPlan, ...]:
        forward = DirectionPlan(self.direction, self.signature, self.kernels, self.table, self.shared)
        return (forward,) + ((self.backward,) if self.backward else ())

    @property
    def facts(self) -> KernelFacts:
        return kernel_facts(self.spec)

    @property
    def vector_width(self) -> bool:
        """The kernels take VEC."""
        return any(p.source is Source.VEC for p in self.signature.params)

    @property
    def module(self) -> str:
        return names.target_module(self.spec, self.target)

    @property
    def modes(self) -> tuple[ResidualMode | None, ...]:
        return self.spec.residual or (None,)


# ----------------------------------------------------------------------------
# Spec-level facts (what the templates branch on; resolved in the kernel text)


@dataclass(frozen=True)
class KernelFacts:
    has_residual: bool
    has_weight: bool
    has_bias: bool
    kind: kinds.Kind  # the norm's math: its macros (kind.template), words and statistics (dsl/kinds/)
    has_mean: bool  # the kind computes a row mean (its statistics are mean and rstd)
    casting: str  # llama, gemma, none
    weight_offset: str  # literal added to the weight ("" when none)
    stores_rstd: bool  # the caller may ask for rstd (return_rstd)
    stores_mean: bool
    writes_rstd: bool  # the forward kernels can write rstd: asked for, or saved for the backward
    writes_mean: bool
    quantized: bool
    fp8: bool
    qmin: str
    qmax: str
    round_x_hat: bool  # llama and none: x_hat is rounded to the input dtype before the affine part
    round_steps: bool  # none: statistics and every elementwise step rounded to the input dtype
    round_weight: bool  # none with an offset: w + offset rounded to the input dtype
    pre: bool  # pre mode exists: s = x + r is stored
    post_stores_y: bool  # post mode of a quantized op: the unquantized y is the residual out
    mode_switch: bool  # both modes: the PRE constexpr picks one
    post: bool  # post mode exists: the backward recomputes s = x + r
    formula: str  # one line for docstrings
    gradients: str  # what the backward computes, for docstrings
    partials: str  # the backward's partial-sum outputs: "DW", "DB" or "DW and DB"


def kernel_facts(spec: NormSpec) -> KernelFacts:
    return KernelFacts(
        has_residual=spec.has_residual,
        has_weight=spec.has_weight,
        has_bias=spec.has_bias,
        kind=spec.kind,
        has_mean=spec.kind.has_mean,
        casting=spec.casting.value,
        weight_offset=format_number(spec.weight.offset) if spec.weight.has_offset else "",
        stores_rstd=spec.stores_rstd,
        stores_mean=spec.stores_mean,
        writes_rstd=spec.saves_rstd,
        writes_mean=spec.saves_mean,
        quantized=spec.is_quantized,
        fp8=spec.quantize is Quantize.FP8_E4M3,
        qmin=format_number(QUANT_MIN[spec.quantize]) if spec.is_quantized else "",
        qmax=format_number(QUANT_MAX[spec.quantize]) if spec.is_quantized else "",
        round_x_hat=spec.casting in (Casting.LLAMA, Casting.NONE),
        round_steps=spec.casting is Casting.NONE,
        round_weight=spec.casting is Casting.NONE and spec.weight.has_offset,
        pre=ResidualMode.PRE in spec.residual,
        post_stores_y=ResidualMode.POST in spec.residual and spec.is_quantized,
        mode_switch=len(spec.residual) > 1,
        post=ResidualMode.POST in spec.residual,
        formula=formula(spec),
        gradients=gradients(spec),
        partials=" and ".join(["DW"] * spec.has_weight + ["DB"] * spec.has_bias),
    )


def gradients(spec: NormSpec) -> str:
    """The backward's outputs in words: 'dx (also d(residual)), dw and db'."""
    parts = ["dx (also d(residual))" if spec.has_residual else "dx"]
    parts += ["dw"] * spec.has_weight + ["db"] * spec.has_bias
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def formula(spec: NormSpec) -> str:
    """One line for docstrings: the norm of x, or of s = x + residual for residual ops."""
    core = spec.kind.formula.format(v="s" if spec.has_residual else "x")
    affine = ""
    if spec.has_weight:
        w = f"(w + {format_number(spec.weight.offset)})" if spec.weight.has_offset else "w"
        affine += f" * {w}"
    if spec.has_bias:
        affine += " + b"
    text = f"y = {core}{affine}"
    if spec.is_quantized:
        text += f", quantized per row to {spec.quantize.value}"
    if spec.has_residual:
        text += ", where s = x + residual"
    return text


def writes_residual_out(spec: NormSpec, mode: ResidualMode | None) -> bool:
    """Pre mode writes s = x + r; post mode writes a second tensor only when y is quantized."""
    return mode is ResidualMode.PRE or (mode is ResidualMode.POST and spec.is_quantized)


# ----------------------------------------------------------------------------
# The forward kernels' ABI


def tensor(prefix: str, source: Source, element: str, strided: bool, optional: bool = False) -> list[Param]:
    """A tensor's kernel parameters: its pointer, and its row stride where it has rows."""
    params = [Param(f"{prefix}_ptr", Kind.POINTER, source, element=element, optional=optional)]
    if strided:
        params.append(Param(f"{prefix}_row_stride", Kind.ROW_STRIDE, source, launch_key=True))
    return params


def forward_signature(spec: NormSpec, vector_width: bool, fast_quantize: bool = False) -> Signature:
    """The forward kernels' parameters: tensors, scalars, the call's switches, the launcher's constexprs."""
    stats = "x" if spec.casting is Casting.NONE else "fp32"
    out = QUANT_STORAGE_TOKEN[spec.quantize] if spec.is_quantized else "x"

    params = tensor("X", Source.X, "x", True)
    if spec.has_residual:
        params += tensor("R", Source.RESIDUAL, "x", True)
    if spec.has_weight:
        params += tensor("W", Source.WEIGHT, "x", False)
    if spec.has_bias:
        params += tensor("B", Source.BIAS, "x", False, optional=True)
    params += tensor("Y", Source.OUT, out, True)
    if any(writes_residual_out(spec, mode) for mode in spec.residual):
        params += tensor("RES", Source.RESIDUAL_OUT, "x", True)
    if spec.is_quantized:
        params += tensor("SCALE", Source.SCALE, "fp32", False)
    if spec.saves_mean:
        params += tensor("MEAN", Source.MEAN, stats, False, optional=True)
    if spec.saves_rstd:
        params += tensor("RSTD", Source.RSTD, stats, False, optional=True)
    params += [
        *abi.SHAPE,
        Param("eps", Kind.SCALAR, Source.EPS),
    ]
    switches = [
        (spec.has_bias, "HAS_BIAS", Source.BIAS_GIVEN),
        (spec.saves_mean, "STORE_MEAN", Source.MEAN_ASKED),
        (spec.saves_rstd, "STORE_RSTD", Source.RSTD_ASKED),
        (len(spec.residual) > 1, "PRE", Source.MODE_PRE),
    ]
    params += [Param(name, Kind.CONSTEXPR, source, launch_key=True) for wanted, name, source in switches if wanted]
    params += [*FORWARD_DECIDED, *[abi.VEC] * vector_width]
    if fast_quantize and spec.quantize is Quantize.FP8_E4M3:  # the target's own, after VEC
        params.append(abi.NATIVE_FP8)
    if fast_quantize and spec.quantize is Quantize.INT8:
        params.append(abi.NATIVE_INT8)
    return Signature(tuple(params))


def backward_signature(
    spec: NormSpec, vector_width: bool, pipelined: bool = False, split: bool = False, small_offsets: bool = False
) -> Signature:
    """The backward kernels' parameters. X is what the forward normalized: s = x + r in pre mode
    (the forward's residual out), x otherwise; post mode reads x and r and adds them again. The
    statistics are the ones the training forward saved. DW and DB receive per-program fp32
    partial sums, one row per program, that the op sums (or the gradients themselves: abi.py)."""
    stats = "x" if spec.casting is Casting.NONE else "fp32"
    has_pre, has_post = ResidualMode.PRE in spec.residual, ResidualMode.POST in spec.residual

    params = tensor("DY", Source.GRAD_OUT, "x", True)
    if has_pre:
        params += tensor("DS", Source.GRAD_RESIDUAL_OUT, "x", True, optional=True)
    params += tensor("X", Source.X, "x", True)
    if has_post:
        params += tensor("R", Source.RESIDUAL, "x", True)
    if spec.has_weight:
        params += tensor("W", Source.WEIGHT, "x", False)
    if spec.kind.has_mean:
        params += tensor("MEAN", Source.MEAN, stats, False)
    params += tensor("RSTD", Source.RSTD, stats, False)
    params += tensor("DX", Source.GRAD_X, "x", True)
    if spec.has_weight:
        params += tensor("DW", Source.GRAD_WEIGHT, "fp32", False)
    if spec.has_bias:
        params += tensor("DB", Source.GRAD_BIAS, "fp32", False, optional=True)
    params += [
        *abi.SHAPE,
    ]
    switches = [
        (has_pre, "HAS_DS", Source.GRAD_RESIDUAL_GIVEN),
        (spec.has_bias, "HAS_BIAS", Source.BIAS_GIVEN),
        (has_pre and has_post, "PRE", Source.MODE_PRE),
    ]
    params += [Param(name, Kind.CONSTEXPR, source, launch_key=True) for wanted, name, source in switches if wanted]
    # a persistent grid (one partial-sum row per program) or a split one: no PERSISTENT switch
    params += [*BACKWARD_DECIDED, *[abi.VEC] * vector_width]
    params += [abi.LOOP_STAGES] * pipelined + [abi.SPLIT_N] * split + [abi.SMALL_OFFSETS] * small_offsets
    return Signature(tuple(params))


def plan(spec: NormSpec, target: Target, tuning: dict | None = None) -> KernelPlan:
    """The kernels, ABI and dispatch table of one spec on one target; ``tuning``: the target's tuning data."""
    target_rules = rules(target)
    direction = Direction.FORWARD
    kernels = tuple(Kernel(names.kernel_name(spec, direction.value, p.value), direction, p) for p in Pass)
    backward = None
    if spec.has_backward:
        back = Direction.BACKWARD
        backward = DirectionPlan(
            direction=back,
            signature=backward_signature(
                spec,
                target_rules.vector_width,
                target_rules.pipelined_tile_loop,
                target_rules.split_backward,
                target_rules.small_offsets,
            ),
            kernels=tuple(Kernel(names.kernel_name(spec, back.value, p.value), back, p) for p in Pass),
            table=merge_rows(target_rules.backward_table(spec, tuning)),
            shared=backward_signature(spec, False),
        )
    return KernelPlan(
        spec=spec,
        target=target,
        direction=direction,
        signature=forward_signature(spec, target_rules.vector_width, target_rules.fast_quantize),
        kernels=kernels,
        table=merge_rows(target_rules.table(spec, tuning)),
        launch_options=target_rules.options(spec),
        tuning_source=target_rules.tuning_source(spec, tuning),
        shared=forward_signature(spec, False),
        backward=backward,
    )
