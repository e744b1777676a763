"""Planner properties of the npu tables, checked against arithmetic written here (never the planner's
own functions): the tiles fit the unified buffer, the blocks are aligned, and the tables hold the
seed kernel's blocks and upstream mojo_opset's measured ones."""

import importlib

import pytest

from dsl.model import DType, Target
from dsl.plan import Grid, Pass, plan
from dsl.targets import npu_ub

from .test_plan import (
    BYTES,
    NPU_PLANS,
    SHIPPED,
    TUNING,
    UB,
    lookup,
)


def plan_bytes(figures, rows: int, cols: int) -> int:
    """A calibrated plan's bytes: per element of the tile, per column, fixed (dsl/targets/npu_ub.py's figures)."""
    per_element, per_column, fixed = figures
    return int(per_element * rows * cols + per_column * cols + fixed)


@pytest.mark.parametrize("kernel_plan", NPU_PLANS, ids=lambda p: p.spec.name)
def test_npu_tiles_fit_the_unified_buffer(kernel_plan):
    """Every tile fits as the compiler plans it when space is short; multi-buffering only where the
    plan with its copies fits outright (else the compiler falls back); ub_bytes is the most the
    compiler plans, capped at the buffer (docs/npu/ub-plan.md holds the compiler's own figures), with
    fp32 weight and bias rows counted for 16-bit x (2 more bytes per column each)."""
    spec = kernel_plan.spec
    for entry in kernel_plan.table:
        most = 0
        for e in entry.spans():  # an entry over several column blocks: each block's tile
            least, plenty, plenty_mb = npu_ub.family(spec, e.dtype, e.passes)
            fp32_rows = 2 * (spec.has_weight + spec.has_bias) * e.block_n if BYTES[e.dtype] == 2 else 0
            assert plan_bytes(least, e.block_m, e.block_n) <= UB, e
            assert e.multibuffer == (plenty_mb is not None and plan_bytes(plenty_mb, e.block_m, e.block_n) <= UB), e
            plenty = plenty_mb if e.multibuffer else plenty
            bytes_ = plan_bytes(plenty, e.block_m, e.block_n) + fp32_rows if plenty else UB
            most = max(most, min(UB, max(bytes_, plan_bytes(least, e.block_m, e.block_n))))
            # the row block is the measured one (the seed's, or upstream's for the norms without a
            # residual; by the block's widest row and first row count), halved while the tile does not fit
            measured = measured_block_m(kernel_plan.spec)
            rows = measured(e.dtype, e.cols_hi if e.passes is Pass.SINGLE else e.cols_lo, e.rows_lo, e.block_n)
            while rows > 1 and plan_bytes(least, rows, e.block_n) > UB:
                rows //= 2
            assert e.block_m == rows, e
        assert entry.ub_bytes == most, entry  # the most any of its blocks plans


@pytest.mark.parametrize("kernel_plan", NPU_PLANS, ids=lambda p: p.spec.name)
def test_npu_single_pass_blocks_are_aligned_and_hold_the_row(kernel_plan):
    for e in (span for entry in kernel_plan.table for span in entry.spans()):
        row_bytes = e.block_n * BYTES[e.dtype]
        assert row_bytes % 256 == 0, e
        if e.passes is Pass.SINGLE:
            assert e.cols_hi is not None and e.block_n >= e.cols_hi, e
            # the seed's rule: the width rounded up to 256 bytes, no further
            assert e.block_n * BYTES[e.dtype] - e.cols_hi * BYTES[e.dtype] < 256, e


@pytest.mark.parametrize("kernel_plan", NPU_PLANS, ids=lambda p: p.spec.name)
def test_npu_entries_are_persistent_one_warp(kernel_plan):
    for e in kernel_plan.table:
        assert e.block_m >= 1 and e.num_warps == 1 and e.grid is Grid.PERSISTENT, e


def seed_blocks(dtype: DType, n_cols: int, n_rows: int) -> tuple[Pass, int, int]:
    """The seed kernel's (pass, BLOCK_N, BLOCK_M), as shared/seed/npu-tuning-facts.md tabulates them."""
    size = BYTES[dtype]
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


def rmsnorm_block_m(dtype: DType, n_cols: int, n_rows: int, block_n: int) -> int:
    """mojo_opset's RMSNorm inference rule (upstream-npu-norm-facts.md, section 1), the work counted
    on the column block: rows x block_n up to 4096 -> 1, to 16384 -> 2 (4 under 1024 columns), to
    65536 -> 4 (8), beyond the token table rounded down to a power of two; wider than 2048: 4."""
    if n_cols > 2048:
        return 4
    work = n_rows * block_n
    if work <= 4096:
        return 1
    if work <= 16384:
        return 2 if n_cols >= 1024 else 4
    if work <= 65536:
        return 4 if n_cols >= 1024 else 8
    return 4 if n_cols > 1024 else 8 if n_cols > 256 else 16


def layernorm_block_m(dtype: DType, n_cols: int, n_rows: int, block_n: int) -> int:
    """mojo_opset's LayerNorm forward rule (upstream-npu-norm-facts.md, section 2)."""
    fp32 = dtype is DType.FP32
    if n_cols > 8192:
        return 8 if fp32 else 4
    if n_cols == 8192:
        return 1 if n_rows <= 16 else 8 if fp32 else 4
    if 4096 <= n_cols < 8192:
        return 1 if n_rows <= 16 else 4
    table = ((2048, 4), (1024, 8), (512, 12))
    for least, rows in table:
        if n_cols >= least:
            return rows
    if n_cols <= 128:
        return 32 if n_rows >= 256 else 16
    return 18 if n_cols <= 256 else 10


def measured_block_m(spec):
    if spec.has_residual:
        return lambda dtype, n_cols, n_rows, block_n: seed_blocks(dtype, n_cols, n_rows)[2]
    return layernorm_block_m if spec.is_layer else rmsnorm_block_m


@pytest.mark.parametrize(
    ("op", "dtype", "n_cols", "n_rows", "block_m"),
    [
        ("rmsnorm", DType.BF16, 2048, 32, 4),  # upstream's benchmark shape 1x32x2048: work 65536 -> 4
        ("rmsnorm", DType.BF16, 2048, 2, 1),  # work 4096 -> 1
        ("rmsnorm", DType.FP32, 1000, 1000, 8),  # big work, 513-1023 wide -> 8
        ("rmsnorm", DType.BF16, 100, 5000, 16),  # <= 128 wide -> 24 rounded down to 16
        ("rmsnorm", DType.BF16, 8192, 64, 4),  # multi pass: 4
        ("layernorm", DType.FP16, 128, 256, 32),  # upstream's benchmark 256x128: 32 rows
        ("layernorm", DType.FP32, 200, 1000, 18),
        ("layernorm", DType.BF16, 600, 1000, 12),
        ("layernorm", DType.FP32, 8192, 16, 1),
    ],
)
def test_npu_norm_tables_follow_upstream(op, dtype, n_cols, n_rows, block_m):
    """The norms without a residual take mojo_opset's measured row blocks (where the unified buffer
    holds them: these all fit)."""
    (spec,) = [s for s in SHIPPED if s.name == op]
    kernel_plan = plan(spec, Target.NPU, None)  # rows wider than 2048: the tuning file's (tests/test_npu_tune.py)
    assert lookup(kernel_plan, dtype, n_rows, n_cols).block_m == block_m
    assert "mojo_opset" in kernel_plan.tuning_source


def add_rmsnorm_plan(target: Target):
    """add_rmsnorm's plan; on npu without the tuning file (the seed's choices above 2048 columns,
    which tests/test_npu_tune.py shows a file of them reproduces)."""
    (spec,) = [s for s in SHIPPED if s.name == "add_rmsnorm"]
    return plan(spec, target, TUNING[target] if target is Target.CUDA else None)


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
    entry = lookup(add_rmsnorm_plan(Target.NPU), dtype, n_rows, n_cols)
    assert (entry.passes, entry.block_n_for(n_cols), entry.block_m) == (passes, block_n, block_m)


def test_npu_table_is_the_seed_table_for_every_width():
    kernel_plan = add_rmsnorm_plan(Target.NPU)
    for dtype in kernel_plan.spec.dtypes:
        for n_cols in range(1, 9001):
            for n_rows in (1, 32, 33, 1000):
                entry = lookup(kernel_plan, dtype, n_rows, n_cols)
                expected = seed_blocks(dtype, n_cols, n_rows)
                assert (entry.passes, entry.block_n_for(n_cols), entry.block_m) == expected, (dtype, n_cols, n_rows)


@pytest.mark.parametrize("kernel_plan", NPU_PLANS, ids=lambda p: p.spec.name)
def test_npu_single_pass_block_is_the_width_rounded_up_to_256_bytes(kernel_plan):
    """In every direction's table, whether an entry holds one column block or several: a single pass's
    BLOCK_N, as the runtime reads the generated table, is the width rounded up to 256 bytes."""
    module = importlib.import_module(f"generated.{kernel_plan.spec.name}_npu")
    for table in (module.TABLE, getattr(module, "BACKWARD_TABLE", None)):
        for dtype in kernel_plan.spec.dtypes if table else ():
            align = 256 // BYTES[dtype]
            for n_cols in range(1, 2049):
                for n_rows in (1, 33, 1000):
                    entry = table.lookup(dtype.value, n_rows, n_cols)
                    if entry.passes == "single" and n_cols <= 2048:
                        block_n = -(-n_cols // align) * align
                        assert entry.block_n_for(n_cols) == block_n, entry


# -- cuda ------------------------------------------------------------------------
