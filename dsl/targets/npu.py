"""npu (Ascend, triton-ascend): the seed's measured blocks, fitted to the unified buffer as Ascend's compiler plans it.

Single pass while the row fits one column block (2048 elements, its width rounded
up to 256 bytes, or fewer where the kernel family's plan per column cannot hold
that many); row blocks from the seed kernel's measured table, halved until the
compiler can plan the tile; a persistent grid of min(vector cores, row tiles).
Rows wider than 2048: the tuning file's choice (``dsl/tuning/npu.json``, read by
``npu_tuning``: one pass over the whole row or the column loop), else the seed's
column loop. The column loop's first pass stores s = x + r (pre mode) and its later
passes read s back (``reads_back_sum``), as the seed does.

The unified-buffer model (``ub_least``, ``ub_bytes``) is fitted to
``bishengir-compile``'s memory plans (``benchmarks/npu_calibrate.py``; both
figures per representative kernel in ``docs/npu/ub-plan.md``): the compiler
holds several fp32 working tiles per input tile, and the quantized kernels a few
hundred bytes per column besides. Per kernel family, lines in rows x cols and cols:

* ``ub_least``, the fit criterion: at or below every plan the compiler made
  without multi-buffering, at or above what it said it needed where it
  overflowed, and over the buffer where it had to fall back; where the survey
  saw only small tiles, steep, so a table does not reach past what the
  compiler was seen to plan. A tile fits when this is within ``UB_BYTES``.
* ``ub_bytes``, the most the compiler plans: at or above every plan it made
  (with the multi-buffered copies where the entry turns multi-buffering on),
  capped at ``UB_BYTES`` (a plan never reaches past the buffer; with more to
  hold, the compiler reuses buffers in place). Multi-buffering is on only where
  the multi-buffered line fits uncapped, so the compiler never has to fall back.

CI (``tests/test_npu_lowering.py``) plans a representative of every layout and
fails on an overflow, a fallback, or a plan above ``ub_bytes``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..model import DTYPE_BYTES, DType, NormSpec, Quantize, Target
from ..table import DispatchEntry, Grid, Pass, cdiv
from . import TargetRules, npu_tuning

UB_BYTES = 192 * 1024  # unified buffer per vector core on A2 parts (the compiler's 1572864 bits)
ALIGN_BYTES = 256  # column blocks are whole multiples of this (32-byte rule, 256 in the seed)
SINGLE_PASS_MAX = 2048  # elements: wider rows take the multi-pass kernel (the seed's threshold)
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


RowRules = tuple[tuple[int, int | None, int], ...]  # (rows_lo, rows_hi, BLOCK_M), covering 1.. once


def seed_rows(n_cols: int, block_n: int, dtype: DType) -> RowRules:
    """Fused-add RMSNorm (the seed, mojo_opset PR #367): by width; narrow rows by row count."""
    rules = ((1, 32, block_m(n_cols, True)), (33, None, block_m(n_cols, False)))
    return rules if rules[0][2] != rules[1][2] else ((1, None, rules[0][2]),)


def rmsnorm_rows(n_cols: int, block_n: int, dtype: DType) -> RowRules:
    """RMSNorm inference (mojo_opset PR #363, ``rmsnorm_infer_impl``): by the work rows x columns, here
    the column block's (one entry per block): up to 4096 -> 1; to 16384 -> 2 (4 below 1024 columns);
    to 65536 -> 4 (8); beyond, the token table rounded down to a power of two. Wider than 2048: 4."""
    if n_cols > SINGLE_PASS_MAX:
        return ((1, None, 4),)
    wide = n_cols >= 1024
    if n_cols > 1024:
        big = 4
    elif n_cols > 256:
        big = 8
    else:
        big = 16
    steps = ((4096, 1), (16384, 2 if wide else 4), (65536, 4 if wide else 8))
    rules, lo = [], 1
    for work, rows in steps:
        hi = work // block_n
        if hi >= lo:
            rules.append((lo, hi, rows))
            lo = hi + 1
    rules.append((lo, None, big))
    merged: list[tuple[int, int | None, int]] = []
    for rule in rules:  # neighbours with one row block: one rule
        if merged and merged[-1][2] == rule[2]:
            merged[-1] = (merged[-1][0], rule[1], rule[2])
        else:
            merged.append(rule)
    return tuple(merged)


def layernorm_rows(n_cols: int, block_n: int, dtype: DType) -> RowRules:
    """LayerNorm forward (mojo_opset PR #366, ``layer_norm_fwd_heuristics``): by width, dtype and row count."""
    narrow = DTYPE_BYTES[dtype] < 4
    if n_cols > 8192:
        return ((1, None, 4 if narrow else 8),)
    if n_cols == 8192:
        return ((1, 16, 1), (17, None, 4 if narrow else 8))
    if n_cols >= 4096:
        return ((1, 16, 1), (17, None, 4))
    if n_cols >= 2048:
        return ((1, None, 4),)
    if n_cols >= 1024:
        return ((1, None, 8),)
    if n_cols >= 512:
        return ((1, None, 12),)
    if n_cols <= 128:
        return ((1, 255, 16), (256, None, 32))
    if n_cols <= 256:
        return ((1, None, 18),)
    return ((1, None, 10),)


def row_rules_of(spec: NormSpec):
    """The measured row-block rule of the spec's kind, and where it comes from."""
    if spec.has_residual:
        return seed_rows, "the seed kernel's measured NPU block tables (shared/seed/npu-tuning-facts.md)"
    if spec.is_layer:
        return layernorm_rows, (
            "mojo_opset's measured LayerNorm forward table (PR #366; shared/seed/upstream-npu-norm-facts.md, section 2)"
        )
    return rmsnorm_rows, (
        "mojo_opset's measured RMSNorm inference table (PR #363; shared/seed/upstream-npu-norm-facts.md, section 1)"
    )


# ----------------------------------------------------------------------------
# The unified-buffer model


class Bytes(NamedTuple):
    """A plan's UB bytes as per_element * rows * cols + per_column * cols + fixed."""

    per_element: float
    per_column: float
    fixed: int

    def of(self, rows: int, cols: int) -> int:
        return int(self.per_element * rows * cols + self.per_column * cols + self.fixed)


class Family(NamedTuple):
    """A kernel family's fitted plans: the least it needs, the most it plans without and with
    multi-buffering (None: counted as the whole buffer, and multi-buffering stays off)."""

    least: Bytes
    plenty: Bytes | None
    plenty_multibuffer: Bytes | None


# Keyed by (quantized output, layer norm, residual, 16-bit input, pass); printed by
# `python -m benchmarks.npu_calibrate` from the compiler's plans in docs/npu/ub-survey.jsonl, each
# fitted over the shipped specs of its key (casting modes and weight offsets differ by a few
# percent). The quantized kernels get no plenty figures: their plans with multi-buffering fall
# back (and take the compiler minutes), so they run without it and their plan is counted as the
# whole buffer.
FAMILIES: dict[tuple[str, bool, bool, bool, Pass], Family] = {
    ("fp8_e4m3", False, True, False, Pass.MULTI): Family(Bytes(80.0, 1500.0, -286464), None, None),
    ("fp8_e4m3", False, True, False, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -301472), None, None),
    ("fp8_e4m3", False, True, True, Pass.MULTI): Family(Bytes(80.0, 1500.0, -157920), None, None),
    ("fp8_e4m3", False, True, True, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -190272), None, None),
    ("fp8_e4m3", True, True, False, Pass.MULTI): Family(Bytes(80.0, 1500.0, -207232), None, None),
    ("fp8_e4m3", True, True, False, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -296352), None, None),
    ("fp8_e4m3", True, True, True, Pass.MULTI): Family(Bytes(80.0, 1500.0, -155328), None, None),
    ("fp8_e4m3", True, True, True, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -197696), None, None),
    ("int8", False, True, False, Pass.MULTI): Family(Bytes(80.0, 1500.0, -451456), None, None),
    ("int8", False, True, False, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -509856), None, None),
    ("int8", False, True, True, Pass.MULTI): Family(Bytes(80.0, 1500.0, -446816), None, None),
    ("int8", False, True, True, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -528192), None, None),
    ("int8", True, True, False, Pass.MULTI): Family(Bytes(80.0, 1500.0, -451424), None, None),
    ("int8", True, True, False, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -508320), None, None),
    ("int8", True, True, True, Pass.MULTI): Family(Bytes(80.0, 1500.0, -443616), None, None),
    ("int8", True, True, True, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -526656), None, None),
    ("none", False, False, False, Pass.MULTI): Family(
        Bytes(80.0, 0.0, -499360), Bytes(18.0, 4.0, 352), Bytes(14.0, 32.0, 384)
    ),
    ("none", False, False, False, Pass.SINGLE): Family(
        Bytes(10.25, 4.0, -3744), Bytes(10.0, 4.0, 1312), Bytes(14.0, 4.0, 1440)
    ),
    ("none", False, False, True, Pass.MULTI): Family(
        Bytes(18.0, 0.0, 20512), Bytes(18.0, 22.0, 352), Bytes(8.0, 60.0, 384)
    ),
    ("none", False, False, True, Pass.SINGLE): Family(
        Bytes(10.0, 6.0, 40), Bytes(1.5, 0.0, 172128), Bytes(21.75, 6.0, 2464)
    ),
    ("none", False, True, False, Pass.MULTI): Family(
        Bytes(22.0, 0.0, 8256), Bytes(18.0, 20.0, 352), Bytes(42.0, 8.0, 384)
    ),
    ("none", False, True, False, Pass.SINGLE): Family(
        Bytes(10.0, 4.0, 64), Bytes(13.75, 4.0, 3488), Bytes(21.75, 4.0, 2784)
    ),
    ("none", False, True, True, Pass.MULTI): Family(
        Bytes(14.75, 0.0, 47136), Bytes(2.0, 86.0, 352), Bytes(6.0, 72.0, 64)
    ),
    ("none", False, True, True, Pass.SINGLE): Family(
        Bytes(8.75, 10.0, 4144), Bytes(0.0, 1.0, 190816), Bytes(4.25, 9.0, 139360)
    ),
    ("none", True, False, False, Pass.MULTI): Family(
        Bytes(80.0, 0.0, -466880), Bytes(0.75, 89.0, 64), Bytes(2.0, 86.0, 128)
    ),
    ("none", True, False, False, Pass.SINGLE): Family(
        Bytes(12.75, 9.0, -12896), Bytes(13.5, 17.0, 9024), Bytes(18.0, 17.0, 3040)
    ),
    ("none", True, False, True, Pass.MULTI): Family(
        Bytes(80.0, 0.0, -470976), Bytes(10.75, 51.0, 768), Bytes(1.0, 88.0, 128)
    ),
    ("none", True, False, True, Pass.SINGLE): Family(
        Bytes(19.0, 12.0, -85888), Bytes(9.25, 8.0, 68836), Bytes(22.0, 17.0, 4752)
    ),
    ("none", True, True, False, Pass.MULTI): Family(
        Bytes(80.0, 0.0, -462784), Bytes(2.0, 86.0, 160), Bytes(10.0, 74.0, 292)
    ),
    ("none", True, True, False, Pass.SINGLE): Family(
        Bytes(24.75, 20.0, -188032), Bytes(2.25, 1.0, 164672), Bytes(20.25, 13.0, 27940)
    ),
    ("none", True, True, True, Pass.MULTI): Family(
        Bytes(8.0, 0.0, 122912), Bytes(0.0, 92.0, 320), Bytes(1.5, 90.0, 1344)
    ),
    ("none", True, True, True, Pass.SINGLE): Family(
        Bytes(25.5, 25.0, -205696), Bytes(2.0, 3.0, 161856), Bytes(6.0, 7.0, 136576)
    ),
}


def family(spec: NormSpec, dtype: DType, passes: Pass) -> Family:
    """The calibrated family of a spec's kernel. A key no shipped spec calibrates borrows, in this
    order, the figures of the residual sibling, the layer-norm sibling (each a superset of its
    buffers), the other 16-/32-bit input, the other pass."""
    quant = spec.quantize.value if spec.quantize is not Quantize.NONE else "none"
    narrow = DTYPE_BYTES[dtype] < 4
    for other_pass in (passes, Pass.SINGLE if passes is Pass.MULTI else Pass.MULTI):
        for other_narrow in (narrow, not narrow):
            for layer in (spec.is_layer, True, False):
                for residual in (spec.has_residual, True):
                    found = FAMILIES.get((quant, layer, residual, other_narrow, other_pass))
                    if found:
                        return found
    raise KeyError(f"no calibrated npu unified-buffer figures for {quant} kernels")


def ub_least(spec: NormSpec, dtype: DType, passes: Pass, rows: int, cols: int) -> int:
    """The fewest UB bytes the compiler can plan the tile in (its fit criterion)."""
    return family(spec, dtype, passes).least.of(rows, cols)


# With 16-bit x, the weight and bias rows may be fp32 (a call-time choice; the same entry serves both).
# The families are fitted to half rows; with fp32 ones the compiler plans up to this many more bytes
# per column and parameter row (layer norms, whose fp32 weight and bias plans rise by up to 8128
# bytes at 2048 columns; the RMS norms' fall), which ub_bytes counts always. The fit criterion
# (ub_least) is unchanged: every memory layout's widest tile plans without overflow or fallback with
# fp32 rows too (docs/npu/ub-plan.md, the `w=fp32` rows; tests/test_npu_lowering.py plans them).
FP32_PARAM_ROW = 2


def ub_bytes(spec: NormSpec, dtype: DType, passes: Pass, rows: int, cols: int, multibuffer: bool) -> int:
    """The most UB bytes the compiler plans for the tile (never more than the buffer), with parameter
    rows of x's dtype or, for 16-bit x, fp32."""
    fam = family(spec, dtype, passes)
    plenty = fam.plenty_multibuffer if multibuffer else fam.plenty
    if plenty is None:
        return UB_BYTES
    fp32_rows = FP32_PARAM_ROW * (spec.has_weight + spec.has_bias) * cols if DTYPE_BYTES[dtype] < 4 else 0
    return min(UB_BYTES, max(plenty.of(rows, cols) + fp32_rows, fam.least.of(rows, cols)))


def multibuffer_fits(spec: NormSpec, dtype: DType, passes: Pass, rows: int, cols: int) -> bool:
    """Multi-buffering without the compiler's fallback: its plan with the copies fits outright."""
    plenty = family(spec, dtype, passes).plenty_multibuffer
    return plenty is not None and plenty.of(rows, cols) <= UB_BYTES


def max_block_n(spec: NormSpec, dtype: DType, passes: Pass) -> int:
    """The widest aligned column block (at most 2048) whose one-row tile the compiler can plan."""
    align = ALIGN_BYTES // DTYPE_BYTES[dtype]
    block_n = MULTI_BLOCK_N
    while block_n > align and ub_least(spec, dtype, passes, 1, block_n) > UB_BYTES:
        block_n -= align
    return block_n


# Backward: upstream mojo_opset's NPU norm backward kernels (shared/seed/upstream-npu-norm-facts.md,
# section 3): the whole row up to 2048 columns with ceil(4096 / columns) rows per tile, else
# 2048-column blocks of 2 rows; grid of the vector cores.
BACKWARD_SINGLE_PASS_MAX = 2048
BACKWARD_MULTI_BLOCK_N = 2048
BACKWARD_MULTI_BLOCK_M = 2
BACKWARD_TILE = 4096


def _entry(spec, dtype, cols_lo, cols_hi, rows_lo, rows_hi, passes, rows, cols) -> DispatchEntry:
    # Conservative row tiles: halve the row block until the compiler can plan the tile.
    while rows > 1 and ub_least(spec, dtype, passes, rows, cols) > UB_BYTES:
        rows //= 2
    multibuffer = multibuffer_fits(spec, dtype, passes, rows, cols)
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
        multibuffer=multibuffer,
        ub_bytes=ub_bytes(spec, dtype, passes, rows, cols, multibuffer),
    )


def _backward_entry(spec, dtype, cols_lo, cols_hi, passes, rows, cols) -> DispatchEntry:
    """A backward entry with upstream's tile. Its UB is counted as the whole buffer, multi-buffering
    off: the compiler plans these tiles at 105-194 KB (tests/test_npu_lowering.py plans each memory
    layout's widest tile and fails on an overflow or a fallback), and no model of ours is calibrated
    for the backward yet (a first one, counting the tiles, undercounted the compiler by up to 1.8x)."""
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
        multibuffer=False,
        ub_bytes=UB_BYTES,
    )


class NpuRules(TargetRules):
    target = Target.NPU
    launch_options = LAUNCH_OPTIONS
    reads_back_sum = True  # pass 1 stores s, the later passes read it (the seed's 5 GM accesses, not 6)

    def table(self, spec: NormSpec, tuning: dict | None) -> tuple[DispatchEntry, ...]:
        rows_of = row_rules_of(spec)[0]
        entries = []
        for dtype in spec.dtypes:
            align = ALIGN_BYTES // DTYPE_BYTES[dtype]
            single_max = min(SINGLE_PASS_MAX, max_block_n(spec, dtype, Pass.SINGLE))
            multi_block_n = max_block_n(spec, dtype, Pass.MULTI)
            # Single pass: one entry per run of widths sharing a column block and row rules.
            runs: list[list] = []
            for n_cols in range(1, single_max + 1):
                block_n = cdiv(n_cols, align) * align
                key = (block_n, rows_of(n_cols, block_n, dtype))
                if runs and runs[-1][0] == key:
                    runs[-1][2] = n_cols
                else:
                    runs.append([key, n_cols, n_cols])
            for (block_n, row_rules), lo, hi in runs:
                for rows_lo, rows_hi, rows in row_rules:
                    entries.append(_entry(spec, dtype, lo, hi, rows_lo, rows_hi, Pass.SINGLE, rows, block_n))
            # Multi pass: column blocks of up to 2048 elements; the row rules change at these widths.
            # Rows wider than 2048: the tuning file's choices where it has them for this op and dtype.
            wide = npu_tuning.wide_rows(spec, dtype, tuning)
            bounds = sorted({single_max + 1, 2049, 4096, 8192, 8193})
            if wide:
                bounds = [b for b in bounds if b < npu_tuning.WIDE_FROM]
            last = npu_tuning.WIDE_FROM - 1 if wide else None
            spans: list[list] = []
            for lo, nxt in zip(bounds, bounds[1:] + [None] if bounds else [], strict=True):
                rules = rows_of(lo, multi_block_n, dtype)
                if spans and spans[-1][2] == rules:
                    spans[-1][1] = nxt - 1 if nxt else last
                else:
                    spans.append([lo, nxt - 1 if nxt else last, rules])
            for lo, hi, rules in spans:
                for rows_lo, rows_hi, rows in rules:
                    entries.append(_entry(spec, dtype, lo, hi, rows_lo, rows_hi, Pass.MULTI, rows, multi_block_n))
            entries += [npu_tuning.tuned_entry(spec, choice) for choice in wide]
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
        source = (
            row_rules_of(spec)[1] + ", fitted to the unified buffer as bishengir-compile plans it (docs/npu/ub-plan.md)"
        )
        if any(npu_tuning.wide_rows(spec, dtype, tuning) for dtype in spec.dtypes):
            source += "; rows wider than 2048 from dsl/tuning/npu.json"
        return source

    def budget_problems(self, spec: NormSpec, entry: DispatchEntry) -> list[str]:
        least = ub_least(spec, entry.dtype, entry.passes, entry.block_m, entry.block_n)
        model = ub_bytes(spec, entry.dtype, entry.passes, entry.block_m, entry.block_n, entry.multibuffer)
        problems = []
        if least > UB_BYTES:
            problems.append(f"tile needs {least} bytes, over the {UB_BYTES}-byte unified buffer")
        if entry.multibuffer and not multibuffer_fits(spec, entry.dtype, entry.passes, entry.block_m, entry.block_n):
            problems.append("multi-buffered tile over the unified buffer (the compiler would fall back)")
        if entry.ub_bytes != model:
            problems.append(f"ub_bytes {entry.ub_bytes} is not the model's {model}")
        return problems


RULES = NpuRules()
