"""Planner properties of the backward direction, checked against arithmetic written here: which specs
have one, its tables' coverage and grid, the cuda pipeline's shared memory, the npu tables' upstream blocks."""

import pytest

from dsl.model import DType, Target
from dsl.plan import Grid, Pass

from .test_plan import (
    BYTES,
    PLANS,
    SHIPPED,
    UB,
    coverage_problems,
)

BACKWARD_PLANS = [p for p in PLANS if p.backward is not None]
BACKWARD_IDS = [f"{p.spec.name}-{p.target.value}" for p in BACKWARD_PLANS]
SHARED_MEMORY = 227 * 1024  # what one program may use on an H100 or H200


def test_backward_exactly_for_the_specs_that_ask():
    assert {p.spec.name for p in BACKWARD_PLANS} == {s.name for s in SHIPPED if not s.is_quantized}
    assert all(p.backward is None for p in PLANS if p.spec.is_quantized)


@pytest.mark.parametrize("kernel_plan", BACKWARD_PLANS, ids=BACKWARD_IDS)
def test_backward_table_covers_every_width_with_a_persistent_or_split_grid(kernel_plan):
    """Every width has a persistent grid for its most rows (the entry a symbolic row count takes), but
    a layer norm's 16384 columns on cuda; the split grid only on cuda, where one tile holds a row
    (its column programs' sums need no second pass), below 512 rows (256 from 8193 columns), and for
    layer norms at 8193-16384 columns (their persistent single pass spills there), with 8 warps below
    1024 rows and 16 from there (its grid, one program per row and then the column programs, is an
    expression of the rows where they are symbolic): at every row count of exactly 16384 columns,
    and below 8193-16383 columns' persistent rows, which start where the persistent single pass won
    every case measured for the op's modes and dtype (H200, 2026-11-28: docs/bench/backward/
    layer-persistent.md); but layernorm (no residual, no pre mode: int32 row offsets in every call)
    at exactly 16384 columns takes the persistent pass from 1024 rows in bf16 and 2048 in fp16 up to
    131070 rows (H200, 2026-11-29: docs/bench/backward/small-offsets.md)."""
    table = kernel_plan.backward.table
    cuda = kernel_plan.target is Target.CUDA
    for dtype in kernel_plan.spec.dtypes:
        mine = tuple((e.cols_lo, e.cols_hi, e.rows_lo, e.rows_hi) for e in table if e.dtype is dtype)
        assert coverage_problems(mine) == [], (dtype, coverage_problems(mine))
        wide = [e for e in table if e.dtype is dtype and e.cols_lo <= 16384 and (e.cols_hi or 1 << 30) > 8192]
        if cuda and kernel_plan.spec.is_layer:
            # the split grid, its warps doubled from 1024 rows; the persistent pass from the measured rows
            rows = {DType.BF16: 4096, DType.FP16: 8192, DType.FP32: 4096}[dtype]
            if not kernel_plan.spec.has_residual:
                rows = {DType.BF16: 1024, DType.FP16: 8192, DType.FP32: 2048}[dtype]
            split_16 = [(8193, 16383, 1024, rows - 1, 16, Grid.SPLIT)] if rows > 1024 else []
            exact = {DType.BF16: 1024, DType.FP16: 2048}.get(dtype) if not kernel_plan.spec.has_residual else None
            exact_16 = [(16384, 16384, 1, 1023, 8, Grid.SPLIT)]
            if exact is None:
                exact_16.append((16384, 16384, 1024, None, 16, Grid.SPLIT))
            else:
                exact_16 += [(16384, 16384, 1024, exact - 1, 16, Grid.SPLIT)] * (exact > 1024)
                # up to the most rows whose offsets fit in int32 ((rows + 1) * 16384 < 2^31), then split
                exact_16.append((16384, 16384, exact, 131070, 16, Grid.PERSISTENT))
                exact_16.append((16384, 16384, 131071, None, 16, Grid.SPLIT))
            assert [(e.cols_lo, e.cols_hi, e.rows_lo, e.rows_hi, e.num_warps, e.grid) for e in wide] == [
                (8193, 16383, 1, 1023, 8, Grid.SPLIT),
                *split_16,
                (8193, 16383, rows, None, 8 if dtype is DType.FP32 else 16, Grid.PERSISTENT),
                *exact_16,
            ], wide
        elif cuda:
            # the persistent pass takes 16 warps in fp16 and bf16, 8 in fp32
            assert [(e.rows_lo, e.rows_hi, e.num_warps, e.grid) for e in wide] == [
                (1, 255, 8, Grid.SPLIT),
                (256, None, 8 if dtype is DType.FP32 else 16, Grid.PERSISTENT),
            ], wide
    assert table and all(e.grid in (Grid.PERSISTENT, Grid.SPLIT) for e in table)
    for e in table:
        wide_layer = cuda and kernel_plan.spec.is_layer and 8193 <= e.cols_lo and e.cols_hi in (16383, 16384)
        if e.grid is Grid.SPLIT:
            assert cuda and e.passes is Pass.SINGLE and e.stages == 1 and e.block_m * e.block_n <= 16384, e
            assert wide_layer or (e.rows_lo == 1 and e.rows_hi < (256 if e.cols_lo > 8192 else 512)), e
        if kernel_plan.spec.is_layer and e.grid is Grid.PERSISTENT and e.passes is Pass.SINGLE:
            # one tile a row spills beyond 8192 columns: only many rows take it (16384 columns: layernorm)
            exact = e.cols_lo == 16384 and not kernel_plan.spec.has_residual
            assert not cuda or e.cols_hi <= 8192 or ((e.cols_hi == 16383 or exact) and e.rows_lo >= 1024), e
        if e.rows_hi is None:
            assert e.grid is Grid.PERSISTENT or wide_layer, e
    name = kernel_plan.spec.name
    assert [k.name for k in kernel_plan.backward.kernels] == [f"{name}_backward_single", f"{name}_backward_multi"]


@pytest.mark.parametrize(
    "kernel_plan", [p for p in BACKWARD_PLANS if p.target is Target.CUDA], ids=lambda p: p.spec.name
)
def test_cuda_backward_pipeline_fits_the_shared_memory(kernel_plan):
    """Each stage of the pipelined row-tile loop holds the tile's loads: dy and s (x and r in post
    mode, ds in pre mode) in the input dtype. A fixed 3 stages ran out of shared memory on the GPU
    (300,544 bytes asked for, 232,448 there) at wide fp32 tiles: every pipelined entry's stages must
    fit, with 32 KB left for the reductions."""
    modes = {m.value for m in kernel_plan.spec.residual}
    loads = 2 + ("pre" in modes) + ("post" in modes)
    for e in kernel_plan.backward.table:
        tile = e.block_m * e.block_n * BYTES[e.dtype] * loads
        # one stage is no pipelining (no staging buffers); more hold the loads of every stage
        assert 1 <= e.stages <= 4 and (e.stages == 1 or e.stages * tile <= SHARED_MEMORY - 32 * 1024), e
        assert e.passes is Pass.SINGLE or e.stages == 1, e
        # the column loops only beyond 16384 columns (a layer norm's split grid up to there)
        assert e.block_n >= e.cols_hi if e.passes is Pass.SINGLE else e.cols_hi is None and e.cols_lo == 16385, e


@pytest.mark.parametrize(
    "kernel_plan", [p for p in BACKWARD_PLANS if p.target is Target.CUDA], ids=lambda p: p.spec.name
)
def test_cuda_backward_fp32_tiles_hold_half_the_rows_from_256_columns(kernel_plan):
    """fp32's persistent single-pass tiles of 256 columns and more hold at most 32 elements per thread
    where a tile of more than one row would hold more (64 spilled registers and took up to 2x the time on
    an H200); 16-bit tiles keep their rows (halving them lost), and so do fp32 tiles up to 128 columns."""
    table = kernel_plan.backward.table
    persistent = [e for e in table if e.grid is Grid.PERSISTENT and e.passes is Pass.SINGLE]
    for e in persistent:
        if e.dtype is DType.FP32 and e.block_n >= 256 and e.block_m > 1:
            assert e.block_m * e.block_n <= 32 * 32 * e.num_warps, e
    rows = {(e.dtype, e.block_n): e.block_m for e in persistent if e.rows_hi is None}
    assert rows[DType.FP32, 256] == 16 and rows[DType.FP32, 512] == 8 and rows[DType.FP32, 2048] == 2, rows
    assert rows[DType.BF16, 256] == 32 and rows[DType.BF16, 512] == 16 and rows[DType.BF16, 2048] == 4, rows
    assert rows[DType.FP32, 128] == rows[DType.BF16, 128] == 128, rows


@pytest.mark.parametrize(
    "kernel_plan", [p for p in BACKWARD_PLANS if p.target is Target.NPU], ids=lambda p: p.spec.name
)
def test_npu_backward_follows_upstream(kernel_plan):
    """Upstream's backward tiling: rows up to 2048 in one 256-byte aligned block of ceil(4096 / BLOCK_N)
    rows, 2 rows of 2048 beyond; the UB counted as the whole buffer, multi-buffering off."""
    for e in (span for entry in kernel_plan.backward.table for span in entry.spans()):
        assert e.ub_bytes == UB and not e.multibuffer and e.num_warps == 1, e
        if e.passes is Pass.SINGLE:
            assert e.cols_hi <= 2048 and e.block_n >= e.cols_hi and (e.block_n * BYTES[e.dtype]) % 256 == 0, e
            assert e.block_m == -(-4096 // e.block_n), e
        else:
            assert (e.cols_lo, e.cols_hi, e.block_m, e.block_n) == (2049, None, 2, 2048), e
