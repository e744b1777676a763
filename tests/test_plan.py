"""Planner properties, checked against arithmetic written here (never the planner's own functions):
the dispatch tables cover every shape once; each direction has one kernel per pass whose parameters
are the ABI's; the launcher's constexprs; per-op tuning; plan() reads no files. The npu tables'
budgets and blocks: tests/test_plan_npu.py; the backward's tables: tests/test_plan_backward.py."""

import functools
import importlib
import inspect

import pytest

from dsl import pipeline
from dsl.abi import Kind, Source
from dsl.model import DType, Quantize, Target
from dsl.pipeline import SPECS, load_specs
from dsl.plan import Grid, Pass, plan

SHIPPED = sorted(load_specs(SPECS), key=lambda spec: spec.name)
TUNING = pipeline.read_tuning()
PLANS = [plan(spec, target, TUNING[target]) for spec in SHIPPED for target in spec.targets]
PLAN_IDS = [f"{p.spec.name}-{p.target.value}" for p in PLANS]
NPU_PLANS = [p for p in PLANS if p.target is Target.NPU]
CUDA_PLANS = [p for p in PLANS if p.target is Target.CUDA]
BYTES = {DType.FP32: 4, DType.FP16: 2, DType.BF16: 2}
UB = 192 * 1024  # unified buffer per vector core on Ascend A2 parts

# Every width up to 4200 (both sides of every npu and small cuda boundary), then a spread
# up to 70000 with both sides of each power of two.
WIDTHS = sorted(
    set(range(1, 4201))
    | set(range(4201, 70001, 89))
    | {w for p in range(12, 17) for w in (2**p - 1, 2**p, 2**p + 1)}
    | {7338, 70000}
)
ROWS = (1, 2, 3, 5, 31, 32, 33, 34, 64, 100, 1000, 1023, 1024, 1025, 4096, 65535, 65536, 99999, 100000)


def entries_of(kernel_plan, dtype: DType) -> list:
    return [e for e in kernel_plan.table if e.dtype is dtype]


def lookup(kernel_plan, dtype: DType, n_rows: int, n_cols: int):
    (entry,) = [e for e in entries_of(kernel_plan, dtype) if e.covers(n_rows, n_cols)]
    return entry


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


def is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@pytest.mark.parametrize("kernel_plan", CUDA_PLANS, ids=lambda p: p.spec.name)
def test_cuda_blocks_are_powers_of_two_and_hold_the_row(kernel_plan):
    for e in kernel_plan.table:
        assert is_pow2(e.block_n) and is_pow2(e.block_m) and is_pow2(e.num_warps), e
        assert e.ub_bytes == 0 and not e.multibuffer, e
        if e.passes is Pass.SINGLE:
            assert e.cols_hi is not None and e.block_n >= e.cols_hi, e
            assert e.block_m * e.block_n <= 32768, e  # one program's registers
        else:  # the widest bucket, or a tuned row of a narrower one: column blocks narrower than its rows
            assert e.cols_hi is None or e.block_n < e.cols_lo, e


FAKE_TUNING = {
    "fallback": "add_rmsnorm",
    "ops": {
        "add_rmsnorm": {
            (DType.BF16, 4096, 1): (2, 8, Grid.PERSISTENT, None, None),
            (DType.BF16, 8192, 1): (1, 32, Grid.TILES, None, None),
        },
        "rmsnorm": {(DType.BF16, 4096, 1): (4, 16, Grid.TILES, None, None)},
    },
}


def test_cuda_tables_read_each_ops_own_tuning_else_the_fallback():
    by_name = {s.name: s for s in SHIPPED}
    rmsnorm = plan(by_name["rmsnorm"], Target.CUDA, FAKE_TUNING)
    own = lookup(rmsnorm, DType.BF16, 100, 4000)
    assert (own.block_m, own.num_warps, own.grid) == (4, 16, Grid.TILES)
    # a bucket the op has not measured: the fallback op's config
    assert (lookup(rmsnorm, DType.BF16, 100, 8000).block_m, lookup(rmsnorm, DType.BF16, 100, 8000).num_warps) == (1, 32)
    fallback = plan(by_name["layernorm"], Target.CUDA, FAKE_TUNING)
    entry = lookup(fallback, DType.BF16, 100, 4000)
    assert (entry.block_m, entry.num_warps, entry.grid) == (2, 8, Grid.PERSISTENT)
    assert "measured on add_rmsnorm" in fallback.tuning_source
    # an op measured in some buckets only says so (its header said "measured on this op" for all of them)
    assert rmsnorm.tuning_source == (
        "dsl/tuning/cuda.json (measured on this op in 1 of its 78 buckets; the others: add_rmsnorm's configs "
        "where measured, else the planner's defaults)"
    )  # 3 dtypes x 13 width buckets x 2 row buckets
    untuned = lookup(plan(by_name["layernorm"], Target.CUDA, None), DType.BF16, 100, 4000)
    assert untuned.grid is Grid.TILES and (untuned.block_m, untuned.num_warps) != (2, 8)


def test_plan_reads_no_files(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("plan() touched the file system")

    monkeypatch.setattr("builtins.open", refuse)
    monkeypatch.setattr("pathlib.Path.read_text", refuse)
    monkeypatch.setattr("pathlib.Path.exists", refuse)
    for spec in SHIPPED:
        for target in spec.targets:
            plan(spec, target, FAKE_TUNING if target is Target.CUDA else None)


# -- kernels and their ABI ---------------------------------------------------------


@pytest.mark.parametrize("kernel_plan", PLANS, ids=PLAN_IDS)
def test_one_forward_kernel_per_pass(kernel_plan):
    name = kernel_plan.spec.name
    assert [k.name for k in kernel_plan.kernels] == [f"{name}_forward_single", f"{name}_forward_multi"]
    assert {e.passes for e in kernel_plan.table} <= {k.passes for k in kernel_plan.kernels}


@pytest.mark.parametrize("kernel_plan", PLANS, ids=PLAN_IDS)
def test_generated_kernels_take_exactly_the_abi(kernel_plan):
    """The printed parameter lists (and the module's ABI literal) are the planner's ABI."""

    module = importlib.import_module(f"generated.{kernel_plan.module}")
    assert module.ABI == kernel_plan.signature
    expected = [(p.name, p.kind is Kind.CONSTEXPR) for p in kernel_plan.signature.params]
    for kernel in module.KERNELS.values():
        params = inspect.signature(kernel.fn).parameters.values()
        assert [(p.name, "constexpr" in str(p.annotation)) for p in params] == expected


@pytest.mark.parametrize("kernel_plan", PLANS, ids=PLAN_IDS)
def test_abi_layout(kernel_plan):
    spec, abi = kernel_plan.spec, kernel_plan.signature
    # tensors (pointer, then its row stride), then scalars, then constexprs; the launcher's last
    rank = {Kind.POINTER: 0, Kind.ROW_STRIDE: 0, Kind.SCALAR: 1, Kind.CONSTEXPR: 2}
    ranks = [rank[p.kind] + p.decided for p in abi.params]
    assert ranks == sorted(ranks)
    for stride in abi.row_strides:
        (pointer,) = [p for p in abi.of_kind(Kind.POINTER) if p.source is stride.source]
        assert abi.params.index(stride) == abi.params.index(pointer) + 1
    decided = [p.source for p in abi.decided]
    expected = [Source.BLOCK_M, Source.BLOCK_N, Source.EVEN_M, Source.EVEN_N, Source.PERSISTENT]
    cuda = kernel_plan.target is Target.CUDA
    native_fp8 = cuda and spec.quantize is Quantize.FP8_E4M3  # cuda converts to e4m3 itself where it can
    native_int8 = cuda and spec.quantize is Quantize.INT8  # and to int8 (one cvt.rni.sat)
    natives = [Source.NATIVE_FP8] * native_fp8 + [Source.NATIVE_INT8] * native_int8
    assert decided == expected + [Source.VEC] * cuda + natives
    # every row stride, n_rows, n_cols and every switch of the call are in the launch key; pointers are not
    for p in abi.params:
        in_key = (
            p.kind is Kind.ROW_STRIDE
            or p.source in (Source.N_ROWS, Source.N_COLS)
            or (p.kind is Kind.CONSTEXPR and not p.decided)
        )
        assert p.launch_key == in_key, p
    tensors = {p.source for p in abi.of_kind(Kind.POINTER)}
    assert (Source.RESIDUAL in tensors) == spec.has_residual
    assert (Source.SCALE in tensors) == spec.is_quantized
    assert (Source.BIAS in tensors) == spec.has_bias
    # both residual modes: the PRE switch; the residual out exists whenever some mode writes one
    assert any(p.source is Source.MODE_PRE for p in abi.params) == (len(spec.residual) == 2)


def launcher(name: str, target: str):

    return importlib.import_module(f"generated.{name}_{target}").LAUNCHER


@pytest.mark.parametrize(
    ("dtype", "rows", "cols", "strides", "expected"),
    [
        # 3 rows of 4097 bf16: one 8192-wide tile per row, a column mask, odd width: no vectors
        ("bf16", 3, 4097, (4097,), {"BLOCK_N": 8192, "EVEN_N": False, "VEC": 1}),
        # 40000 columns (2^6 * 625): past the 32768-column single pass, 4096-wide blocks, 16-byte vectors
        ("bf16", 1, 40000, (40000,), {"BLOCK_N": 4096, "EVEN_M": True, "EVEN_N": False, "VEC": 8}),
        # 7338 = 2 * 3669: two-element vectors; 7338 columns fill no 8192 block
        ("bf16", 64, 7338, (7338, 7338), {"BLOCK_N": 8192, "EVEN_N": False, "VEC": 2}),
        # 4096 contiguous bf16 columns: 16-byte vectors, no column mask
        ("bf16", 4096, 4096, (4096,), {"BLOCK_N": 4096, "EVEN_N": True, "VEC": 8}),
        # a padded row stride of 4100 fp32 elements limits VEC to 4 (16 bytes of fp32 anyway)
        ("fp32", 5, 4096, (4100,), {"BLOCK_N": 4096, "EVEN_N": True, "VEC": 4}),
        # a row stride of 4098: pairs only
        ("fp16", 5, 4096, (4098,), {"VEC": 2}),
    ],
)
def test_cuda_launcher_constexprs(dtype, rows, cols, strides, expected):
    kernel, grid, options, entry = launcher("add_rmsnorm", "cuda").decide(dtype, rows, cols, 0, (cols, *strides))
    assert kernel.__name__ == f"add_rmsnorm_forward_{'single' if cols <= 32768 else 'multi'}"
    assert {name: options[name] for name in expected} == expected
    assert options["EVEN_M"] == (rows % entry.block_m == 0) and options["BLOCK_M"] == entry.block_m
    assert options["PERSISTENT"] == (entry.grid == "persistent")
    if not options["PERSISTENT"]:
        assert grid == (-(-rows // entry.block_m),)


def test_npu_launcher_constexprs():
    # fp32 x 111 over 33 rows: a 128-column block (512 bytes), 32 rows per tile; 33 rows need a row mask
    _, grid, options, _ = launcher("add_rmsnorm", "npu").decide("fp32", 33, 111, 0)
    assert (options["BLOCK_M"], options["BLOCK_N"], options["EVEN_M"], options["EVEN_N"]) == (32, 128, False, False)
    assert options["PERSISTENT"] and "VEC" not in options
    assert grid == (2,)  # min(cores, 2 tiles)


@pytest.mark.parametrize(
    "name, dtype, n_rows, n_cols, multi",
    [
        ("rmsnorm", DType.BF16, 4096, 8192, True),
        ("rmsnorm", DType.FP16, 100000, 8192, True),
        ("gemma_rmsnorm", DType.BF16, 16384, 8192, True),
        ("rmsnorm", DType.BF16, 4095, 8192, False),  # fewer rows: the single pass was the faster
        ("rmsnorm", DType.BF16, 16384, 8191, False),  # a masked half block: the multi pass lost
        ("rmsnorm", DType.BF16, 16384, 6144, False),
        ("rmsnorm", DType.FP32, 16384, 8192, False),  # not measured
        ("add_rmsnorm", DType.BF16, 16384, 8192, False),  # the add ops gained nothing
        ("layernorm", DType.BF16, 16384, 8192, False),
        ("add_rmsnorm_int8", DType.BF16, 16384, 8192, False),
    ],
)
def test_cuda_rms_norms_take_the_multi_pass_at_exactly_8192_columns_from_4096_rows(name, dtype, n_rows, n_cols, multi):
    """Measured against torch.compile on an H200 (docs/bench/family/rows-8192.md): column blocks of 4096,
    one row a program, 16 warps, from 4096 rows of exactly 8192 columns, for rmsnorm and gemma_rmsnorm."""
    kernel_plan = plan(next(s for s in SHIPPED if s.name == name), Target.CUDA, TUNING[Target.CUDA])
    e = lookup(kernel_plan, dtype, n_rows, n_cols)
    if multi:
        assert (e.passes, e.block_n, e.block_m, e.num_warps, e.grid) == (Pass.MULTI, 4096, 1, 16, Grid.TILES), e
        assert (e.cols_lo, e.cols_hi, e.rows_lo) == (8192, 8192, 4096), e
    else:
        assert e.passes is Pass.SINGLE, e
    # a symbolic row count (torch.compile, dynamic shapes) keeps the single pass: the multi pass took
    # 1.18-1.46x its time at 1-64 rows (docs/bench/family/exact-8192/few-rows.log)
    symbolic = kernel_plan.table and [
        x
        for x in kernel_plan.table
        if x.dtype is dtype and x.cols_lo <= n_cols and (x.cols_hi is None or n_cols <= x.cols_hi) and x.rows_hi is None
    ]
    assert len(symbolic) == 1 and symbolic[0].passes is Pass.SINGLE, symbolic
