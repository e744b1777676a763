"""cuda (NVIDIA through upstream Triton): power-of-two blocks, configs measured per op.

Single pass up to ``MAX_SINGLE_PASS`` columns (a width bucket per power of two),
one multi-pass bucket beyond, times the row buckets ``ROW_BUCKETS``. Rows per
program, warps and the grid policy of each bucket (and, where measured faster, the
multi-pass kernel in a single-pass bucket) come from the measured tuning
file (``dsl/tuning/cuda.json``, written by ``python build.py --tune cuda``) for
the op, or, for an op not measured yet, the file's fallback op; else from
``default_config``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..model import DTYPE_BYTES, Casting, DType, NormKind, NormSpec, ResidualMode, Target
from ..table import DispatchEntry, Grid, Pass, cdiv, next_pow2
from . import TargetRules, TuningError, check_keys, load_tuning_file, whole

MAX_SINGLE_PASS = 32768  # elements held in registers by one program
MULTI_BLOCK_N = 4096
MIN_BLOCK_N = 16
ROW_BUCKETS = ((1, 1023), (1024, None))  # row-count ranges of the table
# Backward launch configs, from sweeps of (rows per tile, warps, programs per SM, loop stages) on an
# H200 in bf16 (rmsnorm, add_rmsnorm pre and post, layernorm; 512-16384 columns, 32-65536 rows;
# 2026-11-26): one program per SM (its partial sums are then one row per SM, which the sum kernel
# adds up quickest) at 1024 columns and more; no pipelining below BACKWARD_PIPELINE_ROWS rows (1.5-1.8
# against 2.2-2.5 µs at 1×4096); a row in one tile up to BACKWARD_SINGLE_PASS columns, column loops
# of BACKWARD_MULTI_BLOCK_N beyond.
BACKWARD_SINGLE_PASS = 16384
# Layer norms keep a persistent single pass up to BACKWARD_SINGLE_PASS_LAYER columns: beyond, its
# program's dw and db sums spill (H200, 2048 rows: fp16 and fp32 16384 columns 961 and 933 µs, the
# column loops 149 and 241; bf16 1256 µs at 10240 and 1271 at 12288 columns, where the column mask
# is on, 116-123 at 16384). Up to LAYER_WIDE columns they take the split grid, whose row programs keep
# no sums, at every row count but those below (wide_layer_entries): since its 16 warps (SPLIT_WIDE_ROWS) it beats the
# column loops from 8192 rows too (H200, 2026-11-28: fp16 and fp32 layernorm 8192-16384 rows of 16384
# columns 0.62-0.72x the time, bf16 layernorm 8192 rows of 12288 columns 0.72x), and bf16's single
# pass of one tile a row at 16384 columns (layernorm 2048-16384 rows 0.82-0.87x, add_layernorm pre
# 8192 rows 0.83x, post 16384 rows 0.86x). docs/bench/backward/split-wide.md; before it,
# layer-wide.md and pre-mode-ds.md.
BACKWARD_SINGLE_PASS_LAYER = 8192
LAYER_WIDE = 16384
# ...but for rows narrower than LAYER_WIDE (the column mask on) from LAYER_PERSISTENT_ROWS rows: there
# the persistent single pass of one tile a row (WIDE_WARPS in fp16 and bf16, 8 in fp32), with the
# early sums (CudaRules.early_sums), beats the split grid in every case measured from that row count,
# for every mode of the op (the table has no mode). H200, 2026-11-28, the split grid against the
# persistent pass per process, alternated twice, 1024-8192 rows of 8200, 12288 and 16000 columns:
# layernorm bf16 0.73-0.92x the time from 1024 rows; fp16 0.90-1.00x at 8192 (1.02-1.11x at 1024-4096
# rows for some widths); fp32 0.79-0.96x from 2048 (1.02x at 1024x16000); add_layernorm pre 0.72-0.98x
# in bf16 and fp16 from 1024 rows, but post bf16 0.86-0.98x only from 4096 (1.02-1.07x at 1024-2048),
# fp16 post 0.92-0.99x at 8192 (1.00x at 4096, up to 1.05x below), fp32 pre 0.89-1.00x from 4096 (up to
# 1.10x at 1024) and post 0.70-0.85x from 1024. At exactly 16384 columns the persistent pass took
# 0.97-1.06x: the split grid stays. docs/bench/backward/layer-persistent.md.
LAYER_PERSISTENT_ROWS = {  # (has a residual, dtype) -> rows
    (False, DType.BF16): 1024,
    (False, DType.FP16): 8192,
    (False, DType.FP32): 2048,
    (True, DType.BF16): 4096,
    (True, DType.FP16): 8192,
    (True, DType.FP32): 4096,
}
# ...and at exactly LAYER_WIDE columns from these rows (layer norms without a residual), since the
# single pass computes its rows' offsets in int32 (CudaRules.small_offsets): the persistent pass took
# layernorm bf16 0.86x the split grid's time at 1024 rows, 0.79x at 2048, 0.74x at 4096, 0.72x at 8192;
# fp16 0.96x at 2048, 0.89x at 8192 (1.02-1.07x at 512-1024: the split grid stays there). fp32 keeps the
# split grid (1.02x at 2048, 0.95x at 8192). add_layernorm keeps it too: its table serves pre mode,
# whose calls with ds keep int64 offsets (its persistent pass took 1.04x the split grid's time at
# 2048 rows). H200, 2026-11-29 (docs/bench/backward/small-offsets.md). Up to LAYER_EXACT_PERSISTENT_LAST
# rows: the most whose offsets fit in int32 at contiguous rows of 16384 ((rows + 1) * 16384 < 2^31,
# runtime.small_offsets). Beyond, and for torch.compile's symbolic row counts (which take the entry of
# the most rows and int64 offsets), the split grid: with int64 offsets the persistent pass took
# 1.00-1.03x its time at 1024-2048 rows in bf16 and 1.03-1.14x at 512-1024 in fp16.
LAYER_EXACT_PERSISTENT_ROWS = {(False, DType.BF16): 1024, (False, DType.FP16): 2048}
LAYER_EXACT_PERSISTENT_LAST = (2**31 - 1) // LAYER_WIDE - 1
BACKWARD_PIPELINE_ROWS = 512
# Below BACKWARD_PIPELINE_ROWS rows (256 at 16384 columns) the single-pass backward takes the split
# grid (dsl/table.py's Grid.SPLIT): one launch writes dx, dw and db, where the persistent grid's partial
# sums take a second (H200, bf16 rmsnorm, add_rmsnorm pre and layernorm, 1-511 rows of 256-8192 and
# 1-255 rows of 16384 columns: 0.36-0.98x the time of the persistent grid; at 511×16384 1.08-1.19x
# for the rms norms). 4 warps, row tiles of up to 4096 elements and 16 rows; at 16384 columns 8 warps
# below SPLIT_WIDE_ROWS rows and 16 from there (H200, bf16, with the column programs' 8192-element
# tiles, against 8 warps and 4096-element tiles before: layer norms at 1024-8191 rows of 12288 and
# 16384 columns 0.78-0.87x the time with 16 warps, 0.89-0.98x with 8 at 2048-4096; at 64-256 rows 16
# warps took 1.12-1.32x, 8 warps 0.96-1.01x; at 512 rows 0.90x and 0.89x;
# docs/bench/backward/split-wide.md).
SPLIT_WIDE_ROWS = 1024
# The persistent single pass at 8193-16384 columns (the rms norms from 256 rows; the layer norms take
# the split grid there) launches WIDE_WARPS warps in fp16 and bf16, 8 in fp32, and adds each tile's
# share of dw to the program's sums before the row's sums (CudaRules.early_sums: dy is then dead
# across them. Triton's spill figure for the kernels compiled at 2048 rows of 12288 and 16384
# columns on the H200: 16-46 before (the rms norms, fp16, bf16, fp32; add_rmsnorm pre fp32 62-66),
# 0-4 after in fp16 and bf16, 0-16 in fp32).
# H200, 2026-11-28, the trees before and after alternating twice: rmsnorm bf16 0.90x the time at
# 256-8192 rows of 16384 columns, 0.82-0.83x at 8200-12288; add_rmsnorm post and gemma_add_rmsnorm
# post 0.89-0.90x, pre without ds 0.85-0.90x, with ds 0.99x (it had 16 warps already), gemma_rmsnorm
# 0.92x, fp16 0.93x; fp32 (8 warps) 0.86-0.95x, where 16 warps took 0.87-1.05x. At 1024 and
# 4096 columns the sums' early place took 1.01-1.15x (rmsnorm, layernorm, add_layernorm), hence
# only wide rows. Before it, 16 warps alone had lost (1.03-1.24x) but for pre mode's calls with ds.
# docs/bench/backward/early-sums.md.
WIDE_WARPS = 16
BACKWARD_MULTI_BLOCK_N = 4096
# fp32 takes the bf16 configs but for rows per tile: from FP32_HALF_TILE_N columns, a persistent tile
# of more than FP32_PER_THREAD elements per thread takes half the rows (the 256-, 512- and 2048-column
# buckets; their tiles spilled 18-136 bytes per thread, scripts/spills.py). H200, 2026-11-27, two
# alternating runs per config (rmsnorm, layernorm, add_rmsnorm pre): 0.53-0.92x the time at 1024-32768
# rows of 256 and 512 columns (layernorm 16384x512 52.8 -> 29.5 µs), 0.96-0.97x at 4096x2048; half
# the rows took 1.11-1.36x at 64 and 128 columns for rmsnorm and layernorm, hence the bound. The trees
# before and after (22:42 UTC, eight ops and modes at 256-2048 columns): 0.48-1.03x, median 0.76x
# (docs/bench/backward/fp32-tiles.md).
FP32_HALF_TILE_N = 256
FP32_PER_THREAD = 32
# The rms norms without a residual or quantization (rmsnorm, gemma_rmsnorm), fp16 and bf16, at exactly
# EXACT_MULTI columns from EXACT_MULTI_ROWS rows: the multi-pass kernel in column blocks of half the row,
# one row a program, 16 warps (Inductor's structure: a looped reduction that re-reads x from L2), in
# place of the bucket's single pass. H200, bf16, 2026-11-28 17:40 UTC (docs/bench/family/rows-8192.md,
# every candidate of the bucket beside torch.compile, two rounds): 0.975x the single pass's time at
# 4096-16384 rows (rmsnorm 8192x8192: 1.004x torch.compile's time against 1.035x; gemma_rmsnorm
# 16384x8192 1.002x against 1.037x); below 4096 rows the single pass is the fastest (0.95-0.99x
# torch.compile's), and at 6144 columns, which the bucket also serves, the multi pass took 1.05x (a
# masked half block), hence exactly this width. The add ops gain nothing there (pre mode 0.98-0.995x,
# post 1.005-1.05x; docs/bench/family/rows-4096/tune.json). An entry of one width: the tuner measures
# buckets, not this (python -m benchmarks.tune cannot choose it). The trees before and after (H200,
# 2026-11-29, alternated twice; docs/bench/family/exact-8192.md): 0.965-0.986x the time at 4096-16384
# rows, 0.98-1.005x torch.compile's (1.00-1.04x before); 8191 and 6144 columns unchanged.
# A symbolic row count (torch.compile with dynamic shapes) takes the open-ended entry (dsl/dispatch.py):
# the multi pass's entry ends at EXACT_MULTI_LAST rows, more than any tensor of 8192 columns holds, so
# that the open-ended one beyond keeps the single pass, which took 0.69-0.85x the multi pass's time at
# 1-64 rows and 0.90-0.94x at 256 (H200, 2026-11-29 06:34 UTC, two rounds;
# docs/bench/family/exact-8192/few-rows.log), where the multi pass saves 1-3% from 4096 rows.
EXACT_MULTI = 8192
EXACT_MULTI_ROWS = 4096
EXACT_MULTI_LAST = 2**31 - 1
SHARED_BYTES = 192 * 1024  # shared memory a pipelined loop may fill (H100/H200 allow 227 KB per block)
TUNING_FILE = Path(__file__).resolve().parent.parent / "tuning" / "cuda.json"


def buckets(
    single_max: int = MAX_SINGLE_PASS, multi_block_n: int = MULTI_BLOCK_N
) -> list[tuple[int, int | None, Pass, int]]:
    """(cols_lo, cols_hi, pass, BLOCK_N) per width bucket, narrowest first."""
    result = []
    lo, hi = 1, MIN_BLOCK_N
    while hi <= single_max:
        result.append((lo, hi, Pass.SINGLE, hi))
        lo, hi = hi + 1, hi * 2
    result.append((lo, None, Pass.MULTI, multi_block_n))
    return result


def backward_config(spec: NormSpec, dtype: DType, block_n: int, passes: Pass) -> tuple[int, int, int, int, int]:
    """(rows per tile, warps, programs per SM, fewest tiles per program, most loop stages) of a backward bucket."""
    if passes is Pass.MULTI:
        return (1, 32, 1, 8, 1) if spec.is_layer else (2, 16, 1, 8, 1)
    if block_n <= 128:
        return 16384 // block_n, 8, 2, 8, 3
    if block_n <= 512:
        return 8192 // block_n, 4, 2, 1, 3
    if block_n <= 2048:
        return 4, 4, 1, 1, 4 if block_n == 1024 else 3
    if block_n <= 8192:
        return 16384 // block_n // 2, 8, 1, 1, 3
    # 16384: w is read per tile (see the template), no pipelining; WIDE_WARPS in fp16 and bf16
    return 1, WIDE_WARPS if dtype in (DType.FP16, DType.BF16) else 8, 1, 1, 1


def split_config(block_n: int, rows_lo: int = 1) -> tuple[int, int, int]:
    """(rows per tile, warps, most rows) of the split grid, for an entry from ``rows_lo`` rows."""
    warps = 4 if block_n <= 8192 else 16 if rows_lo >= SPLIT_WIDE_ROWS else 8
    return min(16, max(1, 4096 // block_n)), warps, 511 if block_n <= 8192 else 255


def persistent_entry(
    spec: NormSpec, dtype: DType, cols_lo: int, cols_hi: int | None, passes: Pass, block_n: int
) -> DispatchEntry:
    """The persistent grid's backward entry of a width bucket, for every row count."""
    block_m, num_warps, per_core, min_tiles, most = backward_config(spec, dtype, block_n, passes)
    if (
        dtype is DType.FP32
        and block_n >= FP32_HALF_TILE_N
        and block_m > 1
        and block_m * block_n > FP32_PER_THREAD * 32 * num_warps
    ):
        block_m //= 2
    return DispatchEntry(
        dtype=dtype,
        cols_lo=cols_lo,
        cols_hi=cols_hi,
        rows_lo=1,
        rows_hi=None,
        passes=passes,
        block_m=block_m,
        block_n=block_n,
        num_warps=num_warps,
        grid=Grid.PERSISTENT,
        multibuffer=False,
        ub_bytes=0,
        programs_per_core=per_core,
        min_tiles=min_tiles,
        stages=backward_stages(spec, dtype, block_m, block_n, most),
    )


def wide_layer_entries(spec: NormSpec, dtype: DType, loops: DispatchEntry) -> list[DispatchEntry]:
    """A layer norm's entries of 8193-LAYER_WIDE columns (``loops``: its column loops' entry, whose
    columns and rows they take): the split grid, but for the persistent single pass from
    LAYER_PERSISTENT_ROWS rows of fewer than LAYER_WIDE columns, and from LAYER_EXACT_PERSISTENT_ROWS
    to LAYER_EXACT_PERSISTENT_LAST rows of exactly LAYER_WIDE."""
    wide = replace(loops, passes=Pass.SINGLE, block_n=LAYER_WIDE, cols_hi=LAYER_WIDE)
    masked = replace(wide, cols_hi=LAYER_WIDE - 1)
    rows = LAYER_PERSISTENT_ROWS[spec.has_residual, dtype]
    persistent = persistent_entry(spec, dtype, masked.cols_lo, masked.cols_hi, Pass.SINGLE, LAYER_WIDE)
    exact = replace(wide, cols_lo=LAYER_WIDE)
    exact_rows = LAYER_EXACT_PERSISTENT_ROWS.get((spec.has_residual, dtype))
    if exact_rows is None:
        exact_entries = split_entries(exact)
    else:
        exact_entries = [
            *split_entries(replace(exact, rows_hi=exact_rows - 1)),
            replace(
                persistent,
                cols_lo=LAYER_WIDE,
                cols_hi=LAYER_WIDE,
                rows_lo=exact_rows,
                rows_hi=LAYER_EXACT_PERSISTENT_LAST,
            ),
            *split_entries(replace(exact, rows_lo=LAYER_EXACT_PERSISTENT_LAST + 1)),
        ]
    return [
        *split_entries(replace(masked, rows_hi=rows - 1)),
        replace(persistent, rows_lo=rows),
        *exact_entries,
    ]


def split_entries(entry: DispatchEntry) -> list[DispatchEntry]:
    """A single-pass entry as the split grid's (its rows are the caller's): in two at SPLIT_WIDE_ROWS
    rows where its rows span that bound and the warps differ across it (16384 columns)."""
    spans = entry.rows_lo < SPLIT_WIDE_ROWS and (entry.rows_hi is None or entry.rows_hi >= SPLIT_WIDE_ROWS)
    if not spans or split_config(entry.block_n, 1)[1] == split_config(entry.block_n, SPLIT_WIDE_ROWS)[1]:
        return [split_entry(entry)]
    return [
        split_entry(replace(entry, rows_hi=SPLIT_WIDE_ROWS - 1)),
        split_entry(replace(entry, rows_lo=SPLIT_WIDE_ROWS)),
    ]


def split_entry(entry: DispatchEntry) -> DispatchEntry:
    """A single-pass entry as the split grid's (its rows are the caller's)."""
    block_m, num_warps, _ = split_config(entry.block_n, entry.rows_lo)
    return replace(
        entry, block_m=block_m, num_warps=num_warps, grid=Grid.SPLIT, programs_per_core=1, min_tiles=1, stages=1
    )


def backward_stages(spec: NormSpec, dtype: DType, block_m: int, block_n: int, most: int) -> int:
    """The single-pass backward's pipelining depth: up to ``most`` stages of the tile's loads (dy, s or
    x and r, ds) within the shared memory (H200, bf16: 0.61-0.79 -> 0.70-0.90 of copy bandwidth
    against one stage); the multi-pass kernel's loads are in its inner loops (``most`` is 1)."""
    loaded = 2 + (ResidualMode.POST in spec.residual) + (ResidualMode.PRE in spec.residual)
    per_stage = block_m * block_n * DTYPE_BYTES[dtype] * loaded
    return max(1, min(most, SHARED_BYTES // per_stage))


def default_config(dtype: DType, block_n: int, rows_lo: int) -> tuple[int, int, Grid]:
    """(rows per program, warps, grid) before any measurement: about 16 bytes per thread."""
    block_m = 1 if rows_lo < 1024 or block_n >= 1024 else min(16, 1024 // block_n)
    elements = block_m * block_n
    per_thread = 16 // DTYPE_BYTES[dtype]
    num_warps = min(32, max(1, next_pow2(cdiv(elements, 32 * per_thread * 2))))
    return block_m, num_warps, Grid.TILES


ROW_KEYS = ("dtype", "cols_hi", "rows_lo", "block_m", "num_warps", "grid")
ROW_OPTIONAL = ("passes", "block_n", "score", "speedup_vs_default", "date", "measured_as")
SECTION_OPTIONAL = ("op", "device", "date", "torch", "triton", "method", "complete", "measurements")
FORWARD_GRIDS = (Grid.TILES, Grid.PERSISTENT)  # (the split grid is the backward's: its extra programs)
MAX_BLOCK_M = 16  # the tuner's largest


def parse_tuning(data: dict, source: str = "dsl/tuning/cuda.json") -> dict:
    """The tuning file's JSON -> {"fallback": op, "ops": {op: {(dtype, cols_hi, rows_lo): config}}};
    a config is (rows per program, warps, grid, pass, BLOCK_N), the last two None where the row
    keeps its bucket's (a row may put a single-pass bucket on the multi-pass kernel). Every value is
    checked here (the generated tables print them as they are); a row the planner could not follow,
    a key it does not know and a second row for one bucket are refused (``TuningError``)."""
    check_keys(source, data, ("ops",), ("fallback",))
    if not isinstance(data["ops"], dict):
        raise TuningError(f"{source}: ops must map op names to sections")
    ops = {}
    bucket_of = {cols_hi: (passes, block_n) for _, cols_hi, passes, block_n in buckets()}
    row_lows = [lo for lo, _ in ROW_BUCKETS]
    for op, section in data["ops"].items():
        check_keys(f"{source}: {op}", section, ("best",), SECTION_OPTIONAL)
        if not isinstance(section["best"], list):
            raise TuningError(f"{source}: {op}: best must be a list of rows")
        best = {}
        for row in section["best"]:
            if not isinstance(row, dict):
                raise TuningError(f"{source}: {op}: a row of best is not a JSON object: {row!r}")
            where = f"{source}: {op} {row.get('dtype')} cols_hi {row.get('cols_hi')} rows_lo {row.get('rows_lo')}"
            check_keys(where, row, ROW_KEYS, ROW_OPTIONAL)
            try:
                dtype, grid = DType(row["dtype"]), Grid(row["grid"])
                passes = Pass(row["passes"]) if "passes" in row else None
            except ValueError as error:
                raise TuningError(f"{where}: {error}") from None
            if grid not in FORWARD_GRIDS:
                raise TuningError(f"{where}: grid {grid.value!r}: the forward's grids are tiles and persistent")
            cols_hi = whole(where, "cols_hi", row["cols_hi"], none=True)
            if cols_hi not in bucket_of:
                raise TuningError(f"{where}: no width bucket ends at {cols_hi}")
            rows_lo = whole(where, "rows_lo", row["rows_lo"])
            if rows_lo not in row_lows:
                raise TuningError(f"{where}: no row bucket starts at {rows_lo} (row buckets start at {row_lows})")
            block_m = whole(where, "block_m", row["block_m"], 1, MAX_BLOCK_M, pow2=True)
            num_warps = whole(where, "num_warps", row["num_warps"], 1, 32, pow2=True)
            block_n = whole(where, "block_n", row.get("block_n"), MIN_BLOCK_N, pow2=True, none=True)
            if (passes is None) != (block_n is None):
                raise TuningError(f"{where}: give passes and block_n together, or neither")
            if passes is Pass.SINGLE and (cols_hi is None or block_n != bucket_of[cols_hi][1]):
                widest = "no single pass beyond" if cols_hi is None else f"block_n {bucket_of[cols_hi][1]}"
                raise TuningError(f"{where}: a single pass holds the bucket's whole row ({widest})")
            if block_m * (block_n or bucket_of[cols_hi][1]) > MAX_SINGLE_PASS:
                raise TuningError(f"{where}: a tile of {block_m} rows is over {MAX_SINGLE_PASS} elements")
            if (dtype, cols_hi, rows_lo) in best:
                raise TuningError(f"{where}: a second row for this bucket (which one is meant?)")
            best[dtype, cols_hi, rows_lo] = (block_m, num_warps, grid, passes, block_n)
        ops[op] = best
    fallback = data.get("fallback")
    if fallback is not None and (not isinstance(fallback, str) or fallback not in ops):
        raise TuningError(f"{source}: the fallback op {fallback!r} has no measurements")
    return {"fallback": fallback, "ops": ops}


def load_tuning(path: Path = TUNING_FILE) -> dict | None:
    """The parsed tuning file, or None when there is none (the pipeline calls this, never the planner)."""
    return load_tuning_file(path, parse_tuning)


def op_configs(spec: NormSpec, tuning: dict | None) -> tuple[dict, str]:
    """The configs measured for this op, over the fallback op's for buckets it has not measured,
    and which op the configs were measured on."""
    if not tuning:
        return {}, ""
    fallback = tuning["fallback"]
    configs = dict(tuning["ops"][fallback]) if fallback else {}
    if spec.name in tuning["ops"]:
        return configs | tuning["ops"][spec.name], spec.name
    return configs, fallback or ""


class CudaRules(TargetRules):
    target = Target.CUDA
    vector_width = True
    program_barrier = True
    pipelined_tile_loop = True
    split_backward = True
    # H200, bf16, two alternating runs per tree (2026-11-27 15:05 UTC): add_rmsnorm pre 2048×16384
    # 0.978x the time, 128×16384 0.954x, 32×4096 0.983x (loops of one stage). Only where the loop is
    # not pipelined: in the benchmark run after (15:06) the early load in a pipelined loop took
    # add_rmsnorm pre 16384×2048 from 66.6 to 77.8 µs. Not where the op has a bias: add_layernorm pre
    # 2048×16384 took 10.4x as long (1376 against 132 µs; dw's and db's sums and ds spill). Nor beside
    # dw's sums in fp32 rows of 16384 columns (2026-11-27 19:21 UTC, two alternating runs per tree):
    # add_rmsnorm pre 1024-4096 rows took 665-2552 µs with it, 95-341 without. The split grid's row
    # programs keep no sums and keep it in fp32 too (128×16384: 13.1 against 13.7 µs).
    early_ds = 16384 * 16
    early_sums = 8192  # the rows of WIDE_WARPS (measured together there; below, up to 1.15x the time)
    # int32 row offsets in the single pass, where they fit: the layer norms' persistent pass at 16384
    # columns spilled less and took 0.76-0.85x its time with int64 ones at 1024-8192 rows in bf16
    # (layernorm; add_layernorm post 0.83-0.87x), 0.91x at 2048x12288; the rms norms 0.99-1.00x. Not with ds (pre mode):
    # add_layernorm pre bf16 took 1.12-1.14x the time at 2048-4096 rows of 12288 columns. H200,
    # 2026-11-29, the trees with and without, each op's own and the persistent entry (scratch notes in
    # docs/bench/backward/small-offsets.md).
    small_offsets = True
    fast_quantize = True
    eviction_hints = True

    def options(self, spec: NormSpec) -> tuple[tuple[str, object], ...]:
        # casting none rounds every step to the input dtype: a fused multiply-add would skip
        # the rounding between x_hat * w and + b (seen on the GPU), so fusion is off for it
        return (("enable_fp_fusion", False),) if spec.casting is Casting.NONE else ()

    def table(self, spec: NormSpec, tuning: dict | None) -> tuple[DispatchEntry, ...]:
        entries = self._tuned_table(spec, tuning)
        if spec.norm is not NormKind.RMS or spec.has_residual or spec.is_quantized:
            return entries
        # (see EXACT_MULTI) The bucket's entries, each split at EXACT_MULTI columns, so that its width
        # ranges still partition the columns (4097..8191, then 8192 alone: the generated tables write
        # one op's table as another's amended by width range); at exactly EXACT_MULTI the single pass
        # gives way to the multi pass from EXACT_MULTI_ROWS to EXACT_MULTI_LAST rows.
        multi = dict(passes=Pass.MULTI, block_m=1, block_n=EXACT_MULTI // 2, num_warps=16, grid=Grid.TILES)
        cuts = ((1, EXACT_MULTI_ROWS - 1), (EXACT_MULTI_ROWS, EXACT_MULTI_LAST), (EXACT_MULTI_LAST + 1, None))
        groups: dict[tuple, list[DispatchEntry]] = {}  # one width bucket's entries, in order
        for e in entries:
            groups.setdefault((e.dtype, e.cols_lo, e.cols_hi), []).append(e)
        result = []
        for (dtype, _, cols_hi), group in groups.items():
            if cols_hi != EXACT_MULTI or dtype not in (DType.FP16, DType.BF16):
                result += group
                continue
            exact, swapped = [], False
            for e in group:
                for lo, hi in cuts:
                    lo = max(lo, e.rows_lo)
                    if e.rows_hi is not None:
                        hi = e.rows_hi if hi is None else min(hi, e.rows_hi)
                    if hi is not None and lo > hi:
                        continue
                    piece = replace(e, cols_lo=EXACT_MULTI, rows_lo=lo, rows_hi=hi)
                    swap = e.passes is Pass.SINGLE and lo >= EXACT_MULTI_ROWS and hi is not None
                    swap = swap and hi <= EXACT_MULTI_LAST
                    swapped |= swap
                    exact.append(replace(piece, **multi) if swap else piece)
            # (a bucket the tuning file already puts on the multi pass there keeps its entries whole)
            result += [replace(e, cols_hi=EXACT_MULTI - 1) for e in group] + exact if swapped else group
        return tuple(result)

    def _tuned_table(self, spec: NormSpec, tuning: dict | None) -> tuple[DispatchEntry, ...]:
        configs, _ = op_configs(spec, tuning)
        entries = []
        for dtype in spec.dtypes:
            for cols_lo, cols_hi, passes, block_n in buckets():
                for rows_lo, rows_hi in ROW_BUCKETS:
                    default = (*default_config(dtype, block_n, rows_lo), None, None)  # the bucket's pass, BLOCK_N
                    block_m, num_warps, grid, row_passes, row_block_n = configs.get((dtype, cols_hi, rows_lo), default)
                    entries.append(
                        DispatchEntry(
                            dtype=dtype,
                            cols_lo=cols_lo,
                            cols_hi=cols_hi,
                            rows_lo=rows_lo,
                            rows_hi=rows_hi,
                            passes=row_passes or passes,
                            block_m=block_m,
                            block_n=row_block_n or block_n,
                            num_warps=num_warps,
                            grid=grid,
                            multibuffer=False,
                            ub_bytes=0,
                        )
                    )
        return tuple(entries)

    def backward_table(self, spec: NormSpec, tuning: dict | None) -> tuple[DispatchEntry, ...]:
        entries = []
        for dtype in spec.dtypes:
            single = BACKWARD_SINGLE_PASS_LAYER if spec.is_layer else BACKWARD_SINGLE_PASS
            for cols_lo, cols_hi, passes, block_n in buckets(single, BACKWARD_MULTI_BLOCK_N):
                persistent = persistent_entry(spec, dtype, cols_lo, cols_hi, passes, block_n)
                split_rows = split_config(block_n)[2]
                rows = [(1, split_rows), (split_rows + 1, BACKWARD_PIPELINE_ROWS - 1), (BACKWARD_PIPELINE_ROWS, None)]
                rows = [r for r in rows if r[1] is None or r[0] <= r[1]] if passes is Pass.SINGLE else [(1, None)]
                if passes is Pass.MULTI and spec.is_layer:
                    entries += wide_layer_entries(spec, dtype, persistent)
                    persistent = replace(persistent, cols_lo=LAYER_WIDE + 1)
                for rows_lo, rows_hi in rows:
                    entry = replace(persistent, rows_lo=rows_lo, rows_hi=rows_hi)
                    if rows_hi == split_rows and passes is Pass.SINGLE:
                        entry = split_entry(entry)
                    elif rows_hi is not None:  # few rows: no pipelining (1.5-1.8 against 2.2-2.5 µs at 1×4096)
                        entry = replace(entry, stages=1)
                    entries.append(entry)
        return tuple(entries)

    def tuning_source(self, spec: NormSpec, tuning: dict | None) -> str:
        configs, measured_on = op_configs(spec, tuning)
        if not configs:
            return "the planner's defaults (no tuning data)"
        if measured_on == spec.name:
            own = sum(key[0] in spec.dtypes for key in tuning["ops"][spec.name])
            total = len(spec.dtypes) * len(buckets()) * len(ROW_BUCKETS)
            if own == total:
                return "dsl/tuning/cuda.json (measured on this op)"
            fallback = tuning["fallback"]  # (e.g. fp32's buckets, which a --dtypes bf16 run did not measure)
            others = (
                f"{fallback}'s configs where measured, else the planner's defaults"
                if fallback and fallback != spec.name
                else "the planner's defaults"
            )
            return f"dsl/tuning/cuda.json (measured on this op in {own} of its {total} buckets; the others: {others})"
        return f"dsl/tuning/cuda.json (measured on {measured_on}; this op has no measurements of its own yet)"


RULES = CudaRules()
