"""The kernel ABI: each kernel's parameters as typed data.

The planner computes one ``Signature`` per (op, target, direction); every
kernel of that direction (single and multi pass) takes exactly these
parameters, in this order. Its readers:

* the target template prints the kernels' parameter lists from it, and the
  generated module's ``ABI``: a target-neutral signature of ``_abi.py`` (each
  distinct one printed once there), extended by the target's own constexprs;
* ``dsl/launch_layout.py``'s ``layout`` turns it, per residual mode, into the
  arguments the op surface (``dsl/surface.py``) passes (every parameter whose value
  the call supplies) and the launch key; ``dsl/runtime.py``'s ``Launcher`` finds
  n_rows, n_cols and the row strides in the launch key, and fills the
  launch-decided constexprs, from the ``ABI`` literal;
* the npu lowering test, the benchmark and the tuner build arguments from it.

Nothing recovers a parameter's meaning from its name: ask its ``kind`` and
``source``. This module is plain data (no torch, no triton), so generated code
and the runtime can import it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    POINTER = "pointer"  # a tensor's data pointer
    ROW_STRIDE = "row_stride"  # elements between consecutive rows of a tensor
    SCALAR = "scalar"  # a runtime number (Triton still specializes ints on 1 and on divisibility by 16)
    CONSTEXPR = "constexpr"  # compile time: Triton compiles one kernel per value


class Source(enum.Enum):
    """Where a parameter's value comes from."""

    # Tensors of the call (pointers and row strides); the value is the op's local name.
    X = "x"
    RESIDUAL = "residual"
    WEIGHT = "weight"
    BIAS = "bias"
    OUT = "out"  # y, or q when quantized
    RESIDUAL_OUT = "residual_out"  # s in pre mode; the unquantized y in post mode of a quantized op
    SCALE = "scale"
    MEAN = "mean"
    RSTD = "rstd"
    # Tensors of a backward call: the gradients arriving on the outputs, the gradients it writes.
    GRAD_OUT = "grad_out"  # dy
    GRAD_RESIDUAL_OUT = "grad_residual_out"  # ds, the gradient on s (pre mode), when it has one
    GRAD_X = "grad_x"  # dx (also d(residual): both get the gradient of s)
    # fp32 per-program partial sums of dw and db, (programs, n_cols); a split grid (cuda) is given
    # dw (db) itself, in its dtype, which the kernel casts to
    GRAD_WEIGHT = "grad_weight"
    GRAD_BIAS = "grad_bias"
    # Scalars of the call.
    N_ROWS = "n_rows"
    N_COLS = "n_cols"
    EPS = "eps"
    # Per-call switches (constexprs the op passes).
    BIAS_GIVEN = "bias_given"  # bias is not None
    MEAN_ASKED = "mean_asked"  # a mean output was allocated
    RSTD_ASKED = "rstd_asked"  # an rstd output was allocated
    MODE_PRE = "mode_pre"  # norm_pos == "pre" (only where the op has both modes)
    GRAD_RESIDUAL_GIVEN = "grad_residual_given"  # backward: ds is not None
    # The launcher's decision for a shape (constexprs it passes).
    BLOCK_M = "block_m"  # rows per tile, from the dispatch entry
    BLOCK_N = "block_n"  # columns per block, from the dispatch entry
    EVEN_M = "even_m"  # n_rows is a multiple of BLOCK_M: no row mask
    EVEN_N = "even_n"  # n_cols is a multiple of BLOCK_N: no column mask
    PERSISTENT = "persistent"  # the entry's grid: programs loop over row tiles
    VEC = "vec"  # the widest vector (at most 16 bytes) dividing n_cols and every row stride
    STAGES = "stages"  # software-pipelining depth of a row-tile loop, from the dispatch entry
    SPLIT = "split"  # the backward's split grid: columns per column program (0: no split grid)
    SMALL_OFFSETS = "small_offsets"  # every row's offset (row times stride, plus columns) fits in int32
    NATIVE_FP8 = "native_fp8"  # the device converts fp32 to float8_e4m3fn itself (cuda, capability 8.9+)
    NATIVE_INT8 = "native_int8"  # the device converts fp32 to int8 itself: half to even, saturated, NaN to 0 (cuda)


# Switches the call passes as constexprs; sources the launcher decides (every other
# parameter's value comes with the call).
SWITCHES = frozenset(
    {Source.BIAS_GIVEN, Source.MEAN_ASKED, Source.RSTD_ASKED, Source.MODE_PRE, Source.GRAD_RESIDUAL_GIVEN}
)
DECIDED = frozenset(
    {
        Source.BLOCK_M,
        Source.BLOCK_N,
        Source.EVEN_M,
        Source.EVEN_N,
        Source.PERSISTENT,
        Source.VEC,
        Source.STAGES,
        Source.SPLIT,
        Source.SMALL_OFFSETS,
        Source.NATIVE_FP8,
        Source.NATIVE_INT8,
    }
)
TENSORS = frozenset(
    {
        Source.X,
        Source.RESIDUAL,
        Source.WEIGHT,
        Source.BIAS,
        Source.OUT,
        Source.RESIDUAL_OUT,
        Source.SCALE,
        Source.MEAN,
        Source.RSTD,
        Source.GRAD_OUT,
        Source.GRAD_RESIDUAL_OUT,
        Source.GRAD_X,
        Source.GRAD_WEIGHT,
        Source.GRAD_BIAS,
    }
)
ELEMENTS = ("x", "fp32", "int8", "uint8")  # a pointer's element type: x's dtype, or a fixed one


@dataclass(frozen=True)
class Param:
    name: str  # the kernel's parameter name
    kind: Kind
    source: Source
    launch_key: bool = False  # part of the launch key (the Launcher's cache key after x's dtype)
    element: str = ""  # pointers: one of ELEMENTS
    optional: bool = False  # pointers: the tensor may be absent (None), its switch then False

    def __post_init__(self):
        if (self.kind is Kind.POINTER) != bool(self.element) or (self.element and self.element not in ELEMENTS):
            raise ValueError(f"{self.name}: pointers, and only pointers, have an element type in {ELEMENTS}")
        if self.kind in (Kind.POINTER, Kind.ROW_STRIDE) and self.source not in TENSORS:
            raise ValueError(f"{self.name}: a {self.kind.value} comes from a tensor, not {self.source}")
        if (self.kind is Kind.CONSTEXPR) != (self.source in DECIDED | SWITCHES):
            raise ValueError(f"{self.name}: constexprs, and only they, come from switches or the launcher")

    @property
    def decided(self) -> bool:
        """The launcher passes it (the call passes every other parameter)."""
        return self.source in DECIDED

    @property
    def declaration(self) -> str:
        """How the kernel declares it."""
        return f"{self.name}: tl.constexpr" if self.kind is Kind.CONSTEXPR else self.name

    @property
    def literal(self) -> str:
        """The Python expression that rebuilds it (generated modules print it)."""
        text = f'Param("{self.name}", Kind.{self.kind.name}, Source.{self.source.name}'
        text += ", launch_key=True" if self.launch_key else ""
        text += f', element="{self.element}"' if self.element else ""
        text += ", optional=True" if self.optional else ""
        return text + ")"


@dataclass(frozen=True)
class Signature:
    """One direction's kernel parameters, in order: the call's first, the launcher's last."""

    params: tuple[Param, ...]

    def __post_init__(self):
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate kernel parameters in {names}")
        decided = [p.decided for p in self.params]
        if decided != sorted(decided):
            raise ValueError("the launcher's constexprs must come after every parameter the call passes")

    @classmethod
    def of(cls, *params: Param) -> Signature:
        return cls(params)

    def extended(self, *params: Param) -> Signature:
        """These parameters, then ``params`` (a target's own constexprs)."""
        return Signature(self.params + params)

    @property
    def call(self) -> tuple[Param, ...]:
        """What the op passes, in kernel order (the launcher appends the rest)."""
        return tuple(p for p in self.params if not p.decided)

    @property
    def decided(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.decided)

    @property
    def key(self) -> tuple[Param, ...]:
        """The parameters whose values make up the launch key, after x's dtype."""
        return tuple(p for p in self.params if p.launch_key)

    def key_position(self, source: Source, kind: Kind) -> int:
        """Index in the launch key (x's dtype is at 0) of the parameter with this source and kind."""
        for index, p in enumerate(self.key, start=1):
            if p.source is source and p.kind is kind:
                return index
        raise LookupError(f"no {kind.value} from {source.value} in the launch key")

    def of_kind(self, kind: Kind) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kind is kind)

    @property
    def row_strides(self) -> tuple[Param, ...]:
        return self.of_kind(Kind.ROW_STRIDE)

    @property
    def declaration_lines(self) -> tuple[str, ...]:
        """A kernel's parameter list by group (tensors, scalars, the call's constexprs, the
        launcher's), each group on lines of at most 110 characters."""
        tensors = tuple(p for p in self.params if p.kind in (Kind.POINTER, Kind.ROW_STRIDE))
        switches = tuple(p for p in self.params if p.kind is Kind.CONSTEXPR and not p.decided)
        lines: list[str] = []
        for group in (tensors, self.of_kind(Kind.SCALAR), switches, self.decided):
            line = ""
            for p in group:
                if line and len(line) + len(p.declaration) + 3 > 110:
                    lines.append(line)
                    line = ""
                line = f"{line}, {p.declaration}" if line else p.declaration
            if line:
                lines.append(line)
        return tuple(lines)


# The launcher's constexprs that every target's kernels take, last in their direction's target-neutral
# signature (a target appends its own: VEC, LOOP_STAGES, SPLIT_N, SMALL_OFFSETS). The backward's grid is persistent,
# or split (SPLIT_N above 0: one program per row tile, then column programs).
def strided(name: str, source: Source, element: str, optional: bool = False) -> tuple[Param, Param]:
    """A tensor's pointer NAME_ptr and its row stride NAME_row_stride (a launch key), in that order."""
    pointer = Param(f"{name}_ptr", Kind.POINTER, source, element=element, optional=optional)
    return pointer, Param(f"{name}_row_stride", Kind.ROW_STRIDE, source, launch_key=True)


# The row and column counts (launch keys), after the tensors in every signature.
SHAPE = (
    Param("n_rows", Kind.SCALAR, Source.N_ROWS, launch_key=True),
    Param("n_cols", Kind.SCALAR, Source.N_COLS, launch_key=True),
)

# A target's own constexprs, after the target-neutral parameters (generated modules name them abi.VEC, ...).
VEC = Param("VEC", Kind.CONSTEXPR, Source.VEC)
LOOP_STAGES = Param("LOOP_STAGES", Kind.CONSTEXPR, Source.STAGES)
NATIVE_FP8 = Param("NATIVE_FP8", Kind.CONSTEXPR, Source.NATIVE_FP8)
NATIVE_INT8 = Param("NATIVE_INT8", Kind.CONSTEXPR, Source.NATIVE_INT8)
SPLIT_N = Param("SPLIT_N", Kind.CONSTEXPR, Source.SPLIT)
SMALL_OFFSETS = Param("SMALL_OFFSETS", Kind.CONSTEXPR, Source.SMALL_OFFSETS)
TARGET_OWN = {p.name: p for p in (VEC, LOOP_STAGES, NATIVE_FP8, NATIVE_INT8, SPLIT_N, SMALL_OFFSETS)}

BACKWARD_DECIDED = tuple(
    Param(name, Kind.CONSTEXPR, source)
    for name, source in (
        ("BLOCK_M", Source.BLOCK_M),
        ("BLOCK_N", Source.BLOCK_N),
        ("EVEN_M", Source.EVEN_M),
        ("EVEN_N", Source.EVEN_N),
    )
)
FORWARD_DECIDED = BACKWARD_DECIDED + (Param("PERSISTENT", Kind.CONSTEXPR, Source.PERSISTENT),)
