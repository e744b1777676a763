"""Planner properties: the dispatch tables cover every shape once, fit their budgets and
name kernels that exist; the npu table holds the seed kernel's measured blocks."""

import functools

import pytest

from dsl import names
from dsl.model import DTYPE_BYTES, DType, Target
from dsl.pipeline import SPECS, load_specs
from dsl.plan import (
    NPU_MAX_GRID,
    NPU_UB_BYTES,
    DispatchEntry,
    Grid,
    Pass,
    cdiv,
    npu_ub_bytes,
    plan,
)

SHIPPED = sorted(load_specs(SPECS), key=lambda spec: spec.name)
PLANS = [plan(spec, target) for spec in SHIPPED for target in spec.targets]
PLAN_IDS = [f"{p.spec.name}-{p.target.value}" for p in PLANS]
NPU_PLANS = [p for p in PLANS if p.target is Target.NPU]
CUDA_PLANS = [p for p in PLANS if p.target is Target.CUDA]

# Every width up to 4200 (both sides of every npu and small cuda boundary), then a spread
# up to 70000 with both sides of each power of two.
WIDTHS = sorted(
    set(range(1, 4201))
    | set(range(4201, 70001, 89))
    | {w for p in range(12, 17) for w in (2**p - 1, 2**p, 2**p + 1)}
    | {7338, 70000}
)
ROWS = (1, 2, 3, 5, 31, 32, 33, 34, 64, 100, 1000, 1023, 1024, 1025, 4096, 65535, 65536, 99999, 100000)


def entries_of(kernel_plan, dtype: DType) -> list[DispatchEntry]:
    return [e for e in kernel_plan.table if e.dtype is dtype]


@functools.cache
def coverage_problems(ranges: tuple[tuple, ...]) -> list[str]:
    """(cols_lo, cols_hi, rows_lo, rows_hi) per entry -> the sampled shapes not covered exactly once."""
    problems = []
    for n_cols in WIDTHS:
        by_cols = [r for r in ranges if r[0] <= n_cols and (r[1] is None or n_cols <= r[1])]
        for n_rows in ROWS:
            count = sum(1 for r in by_cols if r[2] <= n_rows and (r[3] is None or n_rows <= r[3]))
            if count != 1:
                problems.append(f"{count} entries cover n_cols={n_cols}, n_rows={n_rows}")
    return problems[:10]


@pytest.mark.parametrize("kernel_plan", PLANS, ids=PLAN_IDS)
def test_table_covers_every_shape_exactly_once(kernel_plan):
    for dtype in kernel_plan.spec.dtypes:
        entries = entries_of(kernel_plan, dtype)
        assert entries, f"no {dtype.value} entries"
        ranges = tuple((e.cols_lo, e.cols_hi, e.rows_lo, e.rows_hi) for e in entries)
        assert coverage_problems(ranges) == [], dtype.value


@pytest.mark.parametrize("kernel_plan", PLANS, ids=PLAN_IDS)
def test_table_has_entries_only_for_the_specs_dtypes(kernel_plan):
    assert {e.dtype for e in kernel_plan.table} == set(kernel_plan.spec.dtypes)


# -- npu -------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_plan", NPU_PLANS, ids=lambda p: p.spec.name)
def test_npu_tiles_fit_the_unified_buffer(kernel_plan):
    spec = kernel_plan.spec
    for e in kernel_plan.table:
        assert e.ub_bytes == npu_ub_bytes(spec, e.dtype, e.block_m, e.block_n), e
        budget = NPU_UB_BYTES // 2 if e.multibuffer else NPU_UB_BYTES
        assert 0 < e.ub_bytes <= budget, e


@pytest.mark.parametrize("kernel_plan", NPU_PLANS, ids=lambda p: p.spec.name)
def test_npu_single_pass_blocks_are_aligned_and_hold_the_row(kernel_plan):
    for e in kernel_plan.table:
        row_bytes = e.block_n * DTYPE_BYTES[e.dtype]
        assert row_bytes % 32 == 0 and row_bytes % 256 == 0, e
        if e.passes is Pass.SINGLE:
            assert e.cols_hi is not None and e.block_n >= e.cols_hi, e
            # The seed's rule: the width rounded up to 256 bytes, no further.
            assert e.block_n == cdiv(e.cols_hi * DTYPE_BYTES[e.dtype], 256) * 256 // DTYPE_BYTES[e.dtype], e


@pytest.mark.parametrize("kernel_plan", NPU_PLANS, ids=lambda p: p.spec.name)
def test_npu_grid_stays_within_the_grid_limit(kernel_plan):
    for e in kernel_plan.table:
        assert e.block_m >= 1 and e.num_warps == 1
        if e.grid is Grid.PERSISTENT:
            continue  # min(vector cores, row tiles), capped at the limit by the runtime
        assert e.rows_hi is not None and cdiv(e.rows_hi, e.block_m) <= NPU_MAX_GRID, e


def seed_blocks(dtype: DType, n_cols: int, n_rows: int) -> tuple[Pass, int, int]:
    """The seed kernel's (pass, BLOCK_N, BLOCK_M), as shared/seed/npu-tuning-facts.md tabulates them."""
    size = DTYPE_BYTES[dtype]
    if n_cols > 2048:
        passes, block_n = Pass.MULTI, 2048
    else:
        passes, block_n = Pass.SINGLE, -(-n_cols * size // 256) * 256 // size
    if n_cols >= 8192:
        block_m = 1
    elif n_cols >= 4096:
        block_m = 2
    elif n_cols >= 2048:
        block_m = 4
    elif n_cols >= 1024:
        block_m = 8
    elif n_cols >= 512:
        block_m = 16
    elif n_cols <= 128:
        block_m = 4 if n_rows <= 32 else 32
    elif n_cols <= 256:
        block_m = 16
    else:
        block_m = 8
    return passes, block_n, block_m


def add_rmsnorm_npu():
    (spec,) = [s for s in SHIPPED if s.name == "add_rmsnorm"]
    return plan(spec, Target.NPU)


def lookup(kernel_plan, dtype: DType, n_rows: int, n_cols: int) -> DispatchEntry:
    (entry,) = [e for e in entries_of(kernel_plan, dtype) if e.covers(n_rows, n_cols)]
    return entry


@pytest.mark.parametrize(
    ("dtype", "n_cols", "n_rows", "passes", "block_n", "block_m"),
    [
        (DType.FP32, 7338, 8, Pass.MULTI, 2048, 2),
        (DType.FP16, 1000, 8, Pass.SINGLE, 1024, 16),
        (DType.FP32, 111, 32, Pass.SINGLE, 128, 4),
        (DType.FP32, 111, 1, Pass.SINGLE, 128, 4),
        (DType.FP32, 111, 33, Pass.SINGLE, 128, 32),
        (DType.FP32, 111, 4096, Pass.SINGLE, 128, 32),
        (DType.FP32, 8192, 8, Pass.MULTI, 2048, 1),
        (DType.BF16, 8192, 1, Pass.MULTI, 2048, 1),
        (DType.FP32, 128, 32, Pass.SINGLE, 128, 4),
        (DType.FP32, 129, 32, Pass.SINGLE, 192, 16),
        (DType.FP16, 2048, 100, Pass.SINGLE, 2048, 4),
        (DType.FP16, 2049, 100, Pass.MULTI, 2048, 4),
        (DType.FP32, 4096, 3, Pass.MULTI, 2048, 2),
    ],
)
def test_npu_blocks_match_the_seed_facts(dtype, n_cols, n_rows, passes, block_n, block_m):
    entry = lookup(add_rmsnorm_npu(), dtype, n_rows, n_cols)
    assert (entry.passes, entry.block_n, entry.block_m) == (passes, block_n, block_m)


def test_npu_table_is_the_seed_table_for_every_width():
    kernel_plan = add_rmsnorm_npu()
    for dtype in kernel_plan.spec.dtypes:
        for n_cols in range(1, 9001):
            for n_rows in (1, 32, 33, 1000):
                entry = lookup(kernel_plan, dtype, n_rows, n_cols)
                expected = seed_blocks(dtype, n_cols, n_rows)
                assert (entry.passes, entry.block_n, entry.block_m) == expected, (dtype, n_cols, n_rows)


# -- cuda ------------------------------------------------------------------------


def is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@pytest.mark.parametrize("kernel_plan", CUDA_PLANS, ids=lambda p: p.spec.name)
def test_cuda_blocks_are_powers_of_two_and_hold_the_row(kernel_plan):
    for e in kernel_plan.table:
        assert is_pow2(e.block_n) and is_pow2(e.block_m) and is_pow2(e.num_warps), e
        assert e.ub_bytes == 0 and not e.multibuffer, e
        if e.passes is Pass.SINGLE:
            assert e.cols_hi is not None and e.block_n >= e.cols_hi, e
        else:
            assert e.cols_hi is None, e


# -- variants --------------------------------------------------------------------


def sample_shapes(e: DispatchEntry) -> set[tuple[int, int]]:
    """Rows and columns on both sides of the entry's bounds and of its block multiples."""
    cols_hi = e.cols_hi if e.cols_hi is not None else e.cols_lo + 3 * e.block_n
    rows_hi = e.rows_hi if e.rows_hi is not None else e.rows_lo + 3 * e.block_m
    cols = {e.cols_lo, e.cols_lo + 1, cols_hi - 1, cols_hi}
    cols |= {k * e.block_n + d for k in (cdiv(e.cols_lo, e.block_n), cols_hi // e.block_n) for d in (-1, 0, 1)}
    rows = {e.rows_lo, e.rows_lo + 1, rows_hi - 1, rows_hi}
    rows |= {k * e.block_m + d for k in (cdiv(e.rows_lo, e.block_m), rows_hi // e.block_m) for d in (-1, 0, 1)}
    return {(r, c) for r in rows for c in cols if e.covers(r, c)}


@pytest.mark.parametrize("kernel_plan", PLANS, ids=PLAN_IDS)
def test_every_dispatch_entry_names_an_existing_variant(kernel_plan):
    keys = {variant.key for variant in kernel_plan.variants}
    used = set()
    for e in kernel_plan.table:
        for n_rows, n_cols in sample_shapes(e):
            for mode in kernel_plan.modes:
                key = e.variant_key(mode, n_rows, n_cols)
                assert key in keys, (e, n_rows, n_cols)
                used.add(key)
    assert used == keys, f"variants no sampled shape reaches: {sorted(keys - used)}"


@pytest.mark.parametrize("kernel_plan", PLANS, ids=PLAN_IDS)
def test_variant_names_are_unique_and_canonical(kernel_plan):
    spec = kernel_plan.spec
    variant_names = [v.name for v in kernel_plan.variants]
    assert len(set(variant_names)) == len(variant_names)
    assert len({v.key for v in kernel_plan.variants}) == len(variant_names)
    for v in kernel_plan.variants:
        assert v.name == names.variant_name(spec, v.mode, v.passes.value, v.row_mask, v.col_mask, v.grid.value)
        assert v.name.startswith(f"{spec.name}_") and v.name.isidentifier()
