"""Stage 4: NormSpec x target -> KernelPlan.

The planner owns every decision: which kernel variants exist, their argument
lists, the block sizes, warps and grid policy of each dispatch entry, which
masks can be dropped, and the resource budgets. Templates print these
decisions and compute nothing.

Targets:

* ``npu`` (Ascend, triton-ascend): single pass while the row fits a 2048-element
  column block, its width rounded up to 256 bytes; row blocks from the seed
  kernel's measured table; a persistent grid of min(vector cores, row tiles);
  every tile checked against the unified buffer (``NPU_UB_BYTES``, half of it
  when the entry turns double buffering on).
* ``cuda`` (NVIDIA through upstream Triton): power-of-two blocks, single pass up
  to ``CUDA_MAX_SINGLE_PASS`` columns, warps and rows per program from the
  measured tuning data (``dsl/tuning/cuda.json``) where it has the shape, else
  from the defaults below.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path

from . import names
from .model import (
    DTYPE_BYTES,
    QUANT_MAX,
    QUANT_MIN,
    QUANT_STORAGE_DTYPE,
    QUANT_TORCH_DTYPE,
    TORCH_DTYPE,
    Casting,
    DType,
    NormSpec,
    Quantize,
    ResidualMode,
    Target,
    format_number,
)


class Pass(enum.Enum):
    SINGLE = "single"  # the row is one tile: x + r never leaves the chip
    MULTI = "multi"  # column loop: statistics first, then normalize


class Grid(enum.Enum):
    TILES = "tiles"  # one program per row tile
    PERSISTENT = "persistent"  # min(cores, row tiles) programs, each looping over tiles


# ----------------------------------------------------------------------------
# Target facts

NPU_UB_BYTES = 192 * 1024  # unified buffer per vector core on A2 parts
NPU_ALIGN_BYTES = 256  # column blocks are whole multiples of this (32-byte rule, 256 in the seed)
NPU_SINGLE_PASS_MAX = 2048  # elements: wider rows take the multi-pass kernel
NPU_MULTI_BLOCK_N = 2048
NPU_MAX_GRID = 65535
NPU_LAUNCH_OPTIONS = (("sync_solver", True),)

CUDA_MAX_SINGLE_PASS = 32768  # elements held in registers by one program
CUDA_MULTI_BLOCK_N = 4096
CUDA_MIN_BLOCK_N = 16
CUDA_ROW_BUCKETS = ((1, 1023), (1024, None))  # row-count ranges of the cuda table
CUDA_TUNING_FILE = Path(__file__).parent / "tuning" / "cuda.json"


def next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ----------------------------------------------------------------------------
# Plan model


@dataclass(frozen=True)
class KernelVariant:
    name: str
    mode: ResidualMode | None
    passes: Pass
    row_mask: bool
    col_mask: bool
    grid: Grid  # persistent kernels loop over row tiles; tiles kernels handle one
    args: tuple[str, ...]  # the kernel's parameters, in order, constexprs last

    @property
    def key(self) -> tuple:
        """Runtime key: (mode token, pass token, row mask, col mask, grid token)."""
        mode = self.mode.value if self.mode else "none"
        return (mode, self.passes.value, self.row_mask, self.col_mask, self.grid.value)

    @property
    def persistent(self) -> bool:
        return self.grid is Grid.PERSISTENT

    @property
    def single(self) -> bool:
        return self.passes is Pass.SINGLE

    @property
    def stores_sum(self) -> bool:
        return self.mode is ResidualMode.PRE

    @property
    def is_post(self) -> bool:
        return self.mode is ResidualMode.POST

    @property
    def summary(self) -> str:
        """Two docstring lines: what this variant writes and which masks it keeps."""
        parts = []
        if self.mode is ResidualMode.PRE:
            parts.append("pre mode: s = x + r is written to RES_ptr")
        elif self.mode is ResidualMode.POST:
            parts.append("post mode: the residual out is y (RES_ptr, if any, gets the unquantized y)")
        parts.append(
            "single pass, each row in one tile" if self.single else "multi pass over BLOCK_N-wide column blocks"
        )
        rows = "masked" if self.row_mask else "a whole number of BLOCK_M tiles"
        cols = "masked" if self.col_mask else "a whole number of BLOCK_N blocks"
        grid = (
            "Each program walks row tiles with a stride of the grid size."
            if self.persistent
            else "Each program handles one row tile (the grid has one program per tile)."
        )
        return "; ".join(parts) + f".\n    Rows {rows}, columns {cols}.\n    {grid}"

    @property
    def vec_hint(self) -> bool:
        return "VEC: tl.constexpr" in self.args

    @property
    def vec_ints(self) -> tuple[str, ...]:
        """The integer parameters that are multiples of VEC: n_cols and the row strides."""
        return ("n_cols",) + tuple(a for a in self.args if a.endswith("_row_stride"))

    # Mask expressions the templates print ("" where the blocks divide the shape).
    @property
    def tile_mask(self) -> str:
        if self.row_mask and self.col_mask:
            return "mask"
        if self.row_mask:
            return "row_mask[:, None]"
        if self.col_mask:
            return "col_mask[None, :]"
        return ""


@dataclass(frozen=True)
class DispatchEntry:
    dtype: DType
    cols_lo: int
    cols_hi: int | None  # None: no upper bound
    rows_lo: int
    rows_hi: int | None
    passes: Pass
    block_m: int
    block_n: int
    num_warps: int
    grid: Grid
    multibuffer: bool  # npu: double buffering (halves the usable unified buffer)
    ub_bytes: int  # npu: the tile's unified-buffer footprint (0 on cuda)

    def covers(self, n_rows: int, n_cols: int) -> bool:
        return (
            self.cols_lo <= n_cols
            and (self.cols_hi is None or n_cols <= self.cols_hi)
            and self.rows_lo <= n_rows
            and (self.rows_hi is None or n_rows <= self.rows_hi)
        )

    def variant_key(self, mode: ResidualMode | None, n_rows: int, n_cols: int) -> tuple:
        """Which kernel serves this shape: masks only where the blocks do not divide it."""
        return (
            mode.value if mode else "none",
            self.passes.value,
            n_rows % self.block_m != 0,
            n_cols % self.block_n != 0,
            self.grid.value,
        )


@dataclass(frozen=True)
class KernelPlan:
    """Everything the templates print for one spec on one target."""

    spec: NormSpec
    target: Target
    variants: tuple[KernelVariant, ...]
    table: tuple[DispatchEntry, ...]
    launch_options: tuple[tuple[str, object], ...]  # extra compile options per launch (npu)
    tuning_source: str  # where the table's numbers come from, for the header

    @property
    def facts(self) -> KernelFacts:
        return kernel_facts(self.spec)

    @property
    def module(self) -> str:
        return names.target_module(self.spec, self.target)

    @property
    def modes(self) -> tuple[ResidualMode | None, ...]:
        return self.spec.residual or (None,)


# ----------------------------------------------------------------------------
# Kernel facts shared by every variant of a spec (what the templates branch on)


@dataclass(frozen=True)
class KernelFacts:
    has_residual: bool
    has_weight: bool
    has_bias: bool
    is_layer: bool
    casting: str  # llama, gemma, none
    weight_offset: str  # literal added to the weight ("" when none)
    stores_rstd: bool
    stores_mean: bool
    quantized: bool
    fp8: bool
    qmin: str
    qmax: str
    round_x_hat: bool  # llama and none: x_hat is rounded to the input dtype before the affine part
    round_steps: bool  # none: statistics and every elementwise step rounded to the input dtype
    round_weight: bool  # none with an offset: w + offset rounded to the input dtype
    formula: str  # one line for docstrings


def kernel_facts(spec: NormSpec) -> KernelFacts:
    return KernelFacts(
        has_residual=spec.has_residual,
        has_weight=spec.has_weight,
        has_bias=spec.has_bias,
        is_layer=spec.is_layer,
        casting=spec.casting.value,
        weight_offset=format_number(spec.weight.offset) if spec.weight.has_offset else "",
        stores_rstd=spec.stores_rstd,
        stores_mean=spec.stores_mean,
        quantized=spec.is_quantized,
        fp8=spec.quantize is Quantize.FP8_E4M3,
        qmin=format_number(QUANT_MIN[spec.quantize]) if spec.is_quantized else "",
        qmax=format_number(QUANT_MAX[spec.quantize]) if spec.is_quantized else "",
        round_x_hat=spec.casting in (Casting.LLAMA, Casting.NONE),
        round_steps=spec.casting is Casting.NONE,
        round_weight=spec.casting is Casting.NONE and spec.weight.has_offset,
        formula=formula(spec),
    )


def formula(spec: NormSpec) -> str:
    """One line for docstrings: the norm of x, or of s = x + residual for residual ops."""
    v = "s" if spec.has_residual else "x"
    if spec.is_layer:
        core = f"({v} - mean({v})) / sqrt(var({v}) + eps)"
    else:
        core = f"{v} / sqrt(mean({v}^2) + eps)"
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


def kernel_args(spec: NormSpec, mode: ResidualMode | None, vec_hint: bool = False) -> tuple[str, ...]:
    """The parameter list of a kernel; the launcher passes arguments in this order.

    ``vec_hint`` (cuda) adds the VEC constexpr: the launcher promises that n_cols
    and every row stride are multiples of VEC elements.
    """
    args = ["X_ptr", "X_row_stride"]
    if spec.has_residual:
        args += ["R_ptr", "R_row_stride"]
    if spec.has_weight:
        args.append("W_ptr")
    if spec.has_bias:
        args.append("B_ptr")
    args += ["Y_ptr", "Y_row_stride"]
    if writes_residual_out(spec, mode):
        args += ["RES_ptr", "RES_row_stride"]
    if spec.is_quantized:
        args.append("SCALE_ptr")
    if spec.stores_mean:
        args.append("MEAN_ptr")
    if spec.stores_rstd:
        args.append("RSTD_ptr")
    args += ["n_rows", "n_cols", "eps"]
    if spec.has_bias:
        args.append("HAS_BIAS: tl.constexpr")
    if spec.stores_mean:
        args.append("STORE_MEAN: tl.constexpr")
    if spec.stores_rstd:
        args.append("STORE_RSTD: tl.constexpr")
    args += ["BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr"]
    if vec_hint:
        args.append("VEC: tl.constexpr")
    return tuple(args)


# What the op passes for each kernel parameter (names are the op module's locals),
# and whether the value is part of the launch key (ints and flags are: Triton
# specializes on them; pointers enter the key through their alignment only).
_ARG_SOURCES = {
    "X_ptr": ("x", False),
    "X_row_stride": ("x_stride", True),
    "R_ptr": ("residual", False),
    "R_row_stride": ("residual_stride", True),
    "W_ptr": ("weight", False),
    "B_ptr": ("bias", False),
    "Y_ptr": ("out", False),
    "Y_row_stride": ("out_stride", True),
    "RES_ptr": ("residual_out", False),
    "RES_row_stride": ("residual_out_stride", True),
    "SCALE_ptr": ("scale", False),
    "MEAN_ptr": ("mean", False),
    "RSTD_ptr": ("rstd", False),
    "n_rows": ("n_rows", False),
    "n_cols": ("n_cols", False),
    "eps": ("eps", False),
    "HAS_BIAS: tl.constexpr": ("bias is not None", True),
    "STORE_MEAN: tl.constexpr": ("mean is not None", True),
    "STORE_RSTD: tl.constexpr": ("rstd is not None", True),
}
# Inputs whose alignment the launch key records (outputs are fresh allocations,
# or these same inputs when written in place).
_ALIGNED_INPUTS = ("x", "residual", "weight", "bias")


@dataclass(frozen=True)
class ModeLaunch:
    """How the op launches the kernels of one residual mode."""

    mode: str  # "pre", "post" or "none"
    new_residual_out: bool  # pre, or post with a quantized y: a second tensor is written
    args: tuple[str, ...]  # expressions, in kernel order, BLOCK_M and BLOCK_N excluded
    key: tuple[str, ...]  # launch-key expressions after (mode, dtype, n_rows, n_cols)
    aligned: tuple[str, ...]  # input tensors whose 16-byte alignment the key records
    optional: tuple[str, ...]  # of those, the ones that may be None


def mode_launch(spec: NormSpec, mode: ResidualMode | None) -> ModeLaunch:
    args, key, tensors = [], [], []
    for name in kernel_args(spec, mode):
        if name.startswith(("BLOCK_", "VEC")):
            continue
        expression, in_key = _ARG_SOURCES[name]
        args.append(expression)
        if in_key:
            key.append(expression)
        if expression in _ALIGNED_INPUTS:
            tensors.append(expression)
    optional = tuple(t for t in tensors if t == "bias")
    token = mode.value if mode else "none"
    return ModeLaunch(token, writes_residual_out(spec, mode), tuple(args), tuple(key), tuple(tensors), optional)


def writes_residual_out(spec: NormSpec, mode: ResidualMode | None) -> bool:
    """Pre mode writes s = x + r; post mode writes a second tensor only when y is quantized."""
    return mode is ResidualMode.PRE or (mode is ResidualMode.POST and spec.is_quantized)


# ----------------------------------------------------------------------------
# NPU table


def npu_block_m(n_cols: int, small_rows: bool) -> int:
    """The seed kernel's measured row block, by width (and, for narrow rows, row count)."""
    if n_cols >= 8192:
        return 1
    if n_cols >= 4096:
        return 2
    if n_cols >= 2048:
        return 4
    if n_cols >= 1024:
        return 8
    if n_cols >= 512:
        return 16
    if n_cols <= 128:
        return 4 if small_rows else 32
    if n_cols <= 256:
        return 16
    return 8


def npu_ub_bytes(spec: NormSpec, dtype: DType, block_m: int, block_n: int) -> int:
    """Unified-buffer footprint of one tile (the model the planner budgets with).

    Inputs stay in their dtype; one fp32 working tile is added when they are
    narrower than fp32 (fp32 math runs in place), and one output tile for the
    downcast; a quantized output adds its 1-byte tile. Weight and bias rows are
    held in their dtype and in fp32.
    """
    size = DTYPE_BYTES[dtype]
    narrow = size < 4
    per_element = size * (2 if spec.has_residual else 1)
    per_element += (4 + size) if narrow else 0
    per_element += 1 if spec.is_quantized else 0
    params = int(spec.has_weight) + int(spec.has_bias)
    per_column = params * (size + (4 if narrow else 0))
    return block_m * block_n * per_element + block_n * per_column


def _npu_entry(spec, dtype, cols_lo, cols_hi, rows_lo, rows_hi, passes, block_m, block_n) -> DispatchEntry:
    # Conservative row tiles: halve the row block until the tile fits the buffer.
    while block_m > 1 and npu_ub_bytes(spec, dtype, block_m, block_n) > NPU_UB_BYTES:
        block_m //= 2
    ub = npu_ub_bytes(spec, dtype, block_m, block_n)
    return DispatchEntry(
        dtype=dtype,
        cols_lo=cols_lo,
        cols_hi=cols_hi,
        rows_lo=rows_lo,
        rows_hi=rows_hi,
        passes=passes,
        block_m=block_m,
        block_n=block_n,
        num_warps=1,
        grid=Grid.PERSISTENT,
        multibuffer=ub <= NPU_UB_BYTES // 2,
        ub_bytes=ub,
    )


def npu_table(spec: NormSpec) -> tuple[DispatchEntry, ...]:
    entries = []
    for dtype in spec.dtypes:
        align = NPU_ALIGN_BYTES // DTYPE_BYTES[dtype]
        # Single pass: one entry per run of widths sharing a column block and row block.
        runs: list[list] = []
        for n_cols in range(1, NPU_SINGLE_PASS_MAX + 1):
            block_n = cdiv(n_cols, align) * align
            row_rules = ((1, 32, npu_block_m(n_cols, True)), (33, None, npu_block_m(n_cols, False)))
            if row_rules[0][2] == row_rules[1][2]:
                row_rules = ((1, None, row_rules[0][2]),)
            key = (block_n, row_rules)
            if runs and runs[-1][0] == key:
                runs[-1][2] = n_cols
            else:
                runs.append([key, n_cols, n_cols])
        for (block_n, row_rules), lo, hi in runs:
            for rows_lo, rows_hi, block_m in row_rules:
                entries.append(_npu_entry(spec, dtype, lo, hi, rows_lo, rows_hi, Pass.SINGLE, block_m, block_n))
        # Multi pass: 2048-element column blocks; the row block shrinks with the width.
        bands = ((NPU_SINGLE_PASS_MAX + 1, 4095), (4096, 8191), (8192, None))
        for lo, hi in bands:
            block_m = npu_block_m(lo, False)
            entries.append(_npu_entry(spec, dtype, lo, hi, 1, None, Pass.MULTI, block_m, NPU_MULTI_BLOCK_N))
    return tuple(entries)


# ----------------------------------------------------------------------------
# CUDA table


def cuda_default_config(dtype: DType, block_n: int, rows_lo: int) -> tuple[int, int, Grid]:
    """(rows per program, warps, grid) before any measurement: about 16 bytes per thread."""
    block_m = 1 if rows_lo < 1024 or block_n >= 1024 else min(16, 1024 // block_n)
    elements = block_m * block_n
    per_thread = 16 // DTYPE_BYTES[dtype]
    num_warps = min(32, max(1, next_pow2(cdiv(elements, 32 * per_thread * 2))))
    return block_m, num_warps, Grid.TILES


def load_cuda_tuning(path: Path = CUDA_TUNING_FILE) -> dict:
    """Measured configs keyed by (dtype, cols_hi, rows_lo); empty when never tuned."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    best = {}
    for row in data["best"]:
        key = (DType(row["dtype"]), row["cols_hi"], row["rows_lo"])
        best[key] = (row["block_m"], row["num_warps"], Grid(row["grid"]))
    return best


def cuda_table(spec: NormSpec, tuning: dict) -> tuple[DispatchEntry, ...]:
    entries = []
    for dtype in spec.dtypes:
        buckets = []
        lo, hi = 1, CUDA_MIN_BLOCK_N
        while hi <= CUDA_MAX_SINGLE_PASS:
            buckets.append((lo, hi, Pass.SINGLE, hi))
            lo, hi = hi + 1, hi * 2
        buckets.append((lo, None, Pass.MULTI, CUDA_MULTI_BLOCK_N))
        for cols_lo, cols_hi, passes, block_n in buckets:
            for rows_lo, rows_hi in CUDA_ROW_BUCKETS:
                config = tuning.get((dtype, cols_hi, rows_lo)) or cuda_default_config(dtype, block_n, rows_lo)
                block_m, num_warps, grid = config
                entries.append(
                    DispatchEntry(
                        dtype=dtype,
                        cols_lo=cols_lo,
                        cols_hi=cols_hi,
                        rows_lo=rows_lo,
                        rows_hi=rows_hi,
                        passes=passes,
                        block_m=block_m,
                        block_n=block_n,
                        num_warps=num_warps,
                        grid=grid,
                        multibuffer=False,
                        ub_bytes=0,
                    )
                )
    return tuple(entries)


# ----------------------------------------------------------------------------
# Variants


def reachable_masks(table: tuple[DispatchEntry, ...], passes: Pass, grid: Grid) -> list[tuple[bool, bool]]:
    """The (row mask, col mask) pairs some shape can dispatch to, for one pass kind and grid policy."""
    pairs = set()
    for entry in table:
        if entry.passes is not passes or entry.grid is not grid:
            continue
        row_options = {False, True} if entry.block_m > 1 else {False}
        lo, hi, block = entry.cols_lo, entry.cols_hi, entry.block_n
        col_options = set()
        if hi is None or (hi // block) * block >= lo:  # some width is a whole number of blocks
            col_options.add(False)
        if hi is None or hi > lo or lo % block:  # some width is not
            col_options.add(True)
        pairs |= {(r, c) for r in row_options for c in col_options}
    return sorted(pairs)


def variants(spec: NormSpec, table: tuple[DispatchEntry, ...], vec_hint: bool = False) -> tuple[KernelVariant, ...]:
    result = []
    for mode in spec.residual or (None,):
        for passes in Pass:
            for grid in Grid:
                for row_mask, col_mask in reachable_masks(table, passes, grid):
                    result.append(
                        KernelVariant(
                            name=names.variant_name(spec, mode, passes.value, row_mask, col_mask, grid.value),
                            mode=mode,
                            passes=passes,
                            row_mask=row_mask,
                            col_mask=col_mask,
                            grid=grid,
                            args=kernel_args(spec, mode, vec_hint),
                        )
                    )
    return tuple(result)


def plan(spec: NormSpec, target: Target, tuning: dict | None = None) -> KernelPlan:
    if target is Target.NPU:
        table = npu_table(spec)
        options = NPU_LAUNCH_OPTIONS
        source = "the seed kernel's measured NPU block tables (shared/seed/npu-tuning-facts.md)"
    else:
        tuning = load_cuda_tuning() if tuning is None else tuning
        table = cuda_table(spec, tuning)
        # casting none rounds every step to the input dtype: a fused multiply-add would skip
        # the rounding between x_hat * w and + b (seen on the GPU), so fusion is off for it
        options = (("enable_fp_fusion", False),) if spec.casting is Casting.NONE else ()
        source = "dsl/tuning/cuda.json (measured)" if tuning else "the planner's defaults (no tuning data)"
    return KernelPlan(spec, target, variants(spec, table, target is Target.CUDA), table, options, source)


# ----------------------------------------------------------------------------
# The op (target-independent)


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
