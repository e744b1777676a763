"""npu (Ascend, triton-ascend): the seed kernel's measured blocks, budgeted against the unified buffer.

Single pass while the row fits a 2048-element column block, its width rounded
up to 256 bytes; row blocks from the seed kernel's measured table; a persistent
grid of min(vector cores, row tiles); every tile checked against the unified
buffer (``UB_BYTES``, half of it when the entry turns double buffering on).
"""

from __future__ import annotations

from ..model import DTYPE_BYTES, DType, NormSpec, ResidualMode, Target
from ..table import DispatchEntry, Grid, Pass, cdiv
from . import TargetRules

UB_BYTES = 192 * 1024  # unified buffer per vector core on A2 parts
ALIGN_BYTES = 256  # column blocks are whole multiples of this (32-byte rule, 256 in the seed)
SINGLE_PASS_MAX = 2048  # elements: wider rows take the multi-pass kernel
MULTI_BLOCK_N = 2048
MAX_GRID = 65535
LAUNCH_OPTIONS = (("sync_solver", True),)


def block_m(n_cols: int, small_rows: bool) -> int:
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


def ub_bytes(spec: NormSpec, dtype: DType, rows: int, cols: int) -> int:
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
    return rows * cols * per_element + cols * per_column


# Backward: upstream mojo_opset's NPU norm backward kernels (shared/seed/upstream-npu-norm-facts.md,
# section 3): the whole row up to 2048 columns with ceil(4096 / columns) rows per tile, else
# 2048-column blocks of 2 rows; grid of the vector cores.
BACKWARD_SINGLE_PASS_MAX = 2048
BACKWARD_MULTI_BLOCK_N = 2048
BACKWARD_MULTI_BLOCK_M = 2
BACKWARD_TILE = 4096


def backward_ub_bytes(spec: NormSpec, dtype: DType, rows: int, cols: int) -> int:
    """Unified-buffer footprint of one backward tile (the model the planner budgets with).

    Tiles in the input dtype: dy, s (post mode: x and r), ds (pre mode) and dx; fp32
    working tiles: dy, s, x_hat and the gradient being formed. Per column: the weight in
    its dtype and fp32, and the fp32 partial sums of dw (and db).
    """
    size = DTYPE_BYTES[dtype]
    inputs = 2 + int(ResidualMode.POST in spec.residual) + int(ResidualMode.PRE in spec.residual)
    per_element = (inputs + 1) * size + 4 * 4
    per_column = (size + 4 if spec.has_weight else 0) + 4 * (int(spec.has_weight) + int(spec.has_bias))
    return rows * cols * per_element + cols * per_column


def _entry(spec, dtype, cols_lo, cols_hi, rows_lo, rows_hi, passes, rows, cols) -> DispatchEntry:
    # Conservative row tiles: halve the row block until the tile fits the buffer.
    while rows > 1 and ub_bytes(spec, dtype, rows, cols) > UB_BYTES:
        rows //= 2
    ub = ub_bytes(spec, dtype, rows, cols)
    return DispatchEntry(
        dtype=dtype,
        cols_lo=cols_lo,
        cols_hi=cols_hi,
        rows_lo=rows_lo,
        rows_hi=rows_hi,
        passes=passes,
        block_m=rows,
        block_n=cols,
        num_warps=1,
        grid=Grid.PERSISTENT,
        multibuffer=ub <= UB_BYTES // 2,
        ub_bytes=ub,
    )


def _backward_entry(spec, dtype, cols_lo, cols_hi, passes, rows, cols) -> DispatchEntry:
    while rows > 1 and backward_ub_bytes(spec, dtype, rows, cols) > UB_BYTES:
        rows //= 2
    ub = backward_ub_bytes(spec, dtype, rows, cols)
    return DispatchEntry(
        dtype=dtype,
        cols_lo=cols_lo,
        cols_hi=cols_hi,
        rows_lo=1,
        rows_hi=None,
        passes=passes,
        block_m=rows,
        block_n=cols,
        num_warps=1,
        grid=Grid.PERSISTENT,
        multibuffer=ub <= UB_BYTES // 2,
        ub_bytes=ub,
    )


class NpuRules(TargetRules):
    target = Target.NPU
    launch_options = LAUNCH_OPTIONS

    def table(self, spec: NormSpec, tuning: dict | None) -> tuple[DispatchEntry, ...]:
        entries = []
        for dtype in spec.dtypes:
            align = ALIGN_BYTES // DTYPE_BYTES[dtype]
            # Single pass: one entry per run of widths sharing a column block and row block.
            runs: list[list] = []
            for n_cols in range(1, SINGLE_PASS_MAX + 1):
                block_n = cdiv(n_cols, align) * align
                row_rules = ((1, 32, block_m(n_cols, True)), (33, None, block_m(n_cols, False)))
                if row_rules[0][2] == row_rules[1][2]:
                    row_rules = ((1, None, row_rules[0][2]),)
                key = (block_n, row_rules)
                if runs and runs[-1][0] == key:
                    runs[-1][2] = n_cols
                else:
                    runs.append([key, n_cols, n_cols])
            for (block_n, row_rules), lo, hi in runs:
                for rows_lo, rows_hi, rows in row_rules:
                    entries.append(_entry(spec, dtype, lo, hi, rows_lo, rows_hi, Pass.SINGLE, rows, block_n))
            # Multi pass: 2048-element column blocks; the row block shrinks with the width.
            for lo, hi in ((SINGLE_PASS_MAX + 1, 4095), (4096, 8191), (8192, None)):
                entries.append(_entry(spec, dtype, lo, hi, 1, None, Pass.MULTI, block_m(lo, False), MULTI_BLOCK_N))
        return tuple(entries)

    def backward_table(self, spec: NormSpec, tuning: dict | None) -> tuple[DispatchEntry, ...]:
        entries = []
        for dtype in spec.dtypes:
            align = ALIGN_BYTES // DTYPE_BYTES[dtype]
            # single pass: one entry per 256-byte column block, ceil(4096 / BLOCK_N) rows (upstream
            # divides by the width itself; by the block, a width's rows are never more than upstream's)
            for block_n in range(align, BACKWARD_SINGLE_PASS_MAX + 1, align):
                rows = cdiv(BACKWARD_TILE, block_n)
                entries.append(_backward_entry(spec, dtype, block_n - align + 1, block_n, Pass.SINGLE, rows, block_n))
            lo = BACKWARD_SINGLE_PASS_MAX + 1
            entries.append(
                _backward_entry(spec, dtype, lo, None, Pass.MULTI, BACKWARD_MULTI_BLOCK_M, BACKWARD_MULTI_BLOCK_N)
            )
        return tuple(entries)

    def tuning_source(self, spec: NormSpec, tuning: dict | None) -> str:
        return "the seed kernel's measured NPU block tables (shared/seed/npu-tuning-facts.md)"

    def budget_problems(self, spec: NormSpec, entry: DispatchEntry) -> list[str]:
        budget = UB_BYTES // 2 if entry.multibuffer else UB_BYTES
        if entry.ub_bytes != ub_bytes(spec, entry.dtype, entry.block_m, entry.block_n) or entry.ub_bytes > budget:
            return [f"tile of {entry.ub_bytes} bytes over the {budget}-byte unified buffer"]
        return []


RULES = NpuRules()
