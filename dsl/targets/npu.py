"""npu (Ascend, triton-ascend): the seed's measured blocks, fitted to the unified buffer as Ascend's compiler plans it.

Single pass while the row fits one column block (2048 elements, its width rounded
up to 256 bytes, or fewer where the kernel family's plan per column cannot hold
that many); row blocks from the seed kernel's measured table, halved until the
compiler can plan the tile; a persistent grid of min(vector cores, row tiles).
Rows wider than 2048: the tuning file's choice (``dsl/tuning/npu.json``, read by
``npu_tuning``: one pass over the whole row or the column loop), else the seed's
column loop. The column loop's first pass stores s = x + r (pre mode) and its later
passes read s back (``reads_back_sum``), as the seed does.

The unified-buffer model (``npu_ub``) is fitted to ``bishengir-compile``'s memory
plans. A single-pass entry may cover several column blocks: its BLOCK_N is the width
rounded up to ``align`` elements (256 bytes), up to its ``block_n``; its ``ub_bytes``
is the most over those blocks, and every block's tile fits.
"""

from __future__ import annotations

from dataclasses import replace

from ..model import DTYPE_BYTES, DType, NormSpec, Target
from ..table import DispatchEntry, Grid, Pass, cdiv
from . import TargetRules, npu_tuning
from .npu_ub import UB_BYTES, multibuffer_fits, ub_bytes, ub_least

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


def merge_blocks(entries: list[DispatchEntry], align: int) -> list[DispatchEntry]:
    """Neighbouring entries (by width, for the same rows) that launch alike as one: with the same
    BLOCK_N, or single-pass ones whose BLOCK_N is the width rounded up to ``align`` (the merged
    entry's rule, ``align``; its ub_bytes the most of theirs). In order of their first widths."""

    def rounded(e: DispatchEntry) -> bool:  # every width's BLOCK_N is the width rounded up to align
        return e.passes is Pass.SINGLE and (e.align or cdiv(e.cols_lo, align) * align == e.block_n)

    merged: list[DispatchEntry] = []
    last: dict[tuple, int] = {}  # how an entry launches, less its columns -> its latest merged entry
    for e in entries:
        key = (e.dtype, e.passes, e.rows_lo, e.rows_hi, e.block_m, e.multibuffer, e.programs_per_core, e.min_tiles)
        at = last.get(key)
        m = merged[at] if at is not None else None
        if m and m.cols_hi is not None and m.cols_hi + 1 == e.cols_lo:
            if m.block_n == e.block_n and not m.align:
                merged[at] = replace(m, cols_hi=e.cols_hi, ub_bytes=max(m.ub_bytes, e.ub_bytes))
                continue
            if rounded(m) and rounded(e) and e.cols_hi is not None:
                ub = max(m.ub_bytes, e.ub_bytes)
                merged[at] = replace(m, cols_hi=e.cols_hi, block_n=e.block_n, ub_bytes=ub, align=align)
                continue
        last[key] = len(merged)
        merged.append(e)
    return merged


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
            own = [
                _entry(spec, dtype, lo, hi, rows_lo, rows_hi, Pass.SINGLE, rows, block_n)
                for (block_n, row_rules), lo, hi in runs
                for rows_lo, rows_hi, rows in row_rules
            ]
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
                    own.append(_entry(spec, dtype, lo, hi, rows_lo, rows_hi, Pass.MULTI, rows, multi_block_n))
            own += [npu_tuning.tuned_entry(spec, choice) for choice in wide]
            entries += merge_blocks(own, align)  # neighbours that launch alike: one entry
        return tuple(entries)

    def backward_table(self, spec: NormSpec, tuning: dict | None) -> tuple[DispatchEntry, ...]:
        entries = []
        for dtype in spec.dtypes:
            align = ALIGN_BYTES // DTYPE_BYTES[dtype]
            # single pass: one entry per 256-byte column block, ceil(4096 / BLOCK_N) rows (upstream
            # divides by the width itself; by the block, a width's rows are never more than upstream's)
            singles = [
                _backward_entry(spec, dtype, n - align + 1, n, Pass.SINGLE, cdiv(BACKWARD_TILE, n), n)
                for n in range(align, BACKWARD_SINGLE_PASS_MAX + 1, align)
            ]
            entries += merge_blocks(singles, align)
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


RULES = NpuRules()
