"""Planner properties, checked against arithmetic written here (never the planner's own functions):
the dispatch tables cover every shape once, fit their budgets and hold the seed kernel's blocks;
each direction has one kernel per pass whose parameters are the ABI's; the launcher's constexprs;
per-op tuning; plan() reads no files."""

import functools
import importlib
import inspect

import pytest

from dsl import pipeline
from dsl.abi import Kind, Source
from dsl.model import DType, Quantize, Target
from dsl.pipeline import SPECS, load_specs
from dsl.plan import Grid, Pass, plan
from dsl.targets import npu_ub

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
        else:
            assert e.cols_hi is None, e


FAKE_TUNING = {
    "fallback": "add_rmsnorm",
    "ops": {
        "add_rmsnorm": {(DType.BF16, 4096, 1): (2, 8, Grid.PERSISTENT), (DType.BF16, 8192, 1): (1, 32, Grid.TILES)},
        "rmsnorm": {(DType.BF16, 4096, 1): (4, 16, Grid.TILES)},
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
    import importlib

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
    assert decided == expected + [Source.VEC] * cuda + [Source.NATIVE_FP8] * native_fp8
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
    import importlib

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


# ----------------------------------------------------------------------------
# The backward direction

BACKWARD_PLANS = [p for p in PLANS if p.backward is not None]
BACKWARD_IDS = [f"{p.spec.name}-{p.target.value}" for p in BACKWARD_PLANS]
SHARED_MEMORY = 227 * 1024  # what one program may use on an H100 or H200


def test_backward_exactly_for_the_specs_that_ask():
    assert {p.spec.name for p in BACKWARD_PLANS} == {s.name for s in SHIPPED if not s.is_quantized}
    assert all(p.backward is None for p in PLANS if p.spec.is_quantized)


@pytest.mark.parametrize("kernel_plan", BACKWARD_PLANS, ids=BACKWARD_IDS)
def test_backward_table_covers_every_width_with_a_persistent_grid(kernel_plan):
    table = kernel_plan.backward.table
    for dtype in kernel_plan.spec.dtypes:
        mine = tuple((e.cols_lo, e.cols_hi, e.rows_lo, e.rows_hi) for e in table if e.dtype is dtype)
        assert coverage_problems(mine) == [], (dtype, coverage_problems(mine))
    assert table and all(e.grid is Grid.PERSISTENT for e in table)
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
        assert e.block_n >= e.cols_hi if e.passes is Pass.SINGLE else e.cols_hi is None, e


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
