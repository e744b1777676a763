"""Every generated table launches exactly as the frozen decisions of tests/data/dispatch_decisions.json.

The fixture (scripts/freeze_dispatch.py) holds each kernel module's rows per dtype as they were
when it was written; the tables' layout may change (rows shared between dtypes, ...), their
launches may not, unless the fixture is rewritten on purpose. Each (op, target, direction,
dtype) is walked over every width and row count at a row boundary of either side, one
either side of it, every column-block edge of an aligned entry, a grid over 1..70000
columns and 1..20000 rows, and the unknown row count (None).
"""

import json
from pathlib import Path

import pytest

from dsl import runtime

FIXTURE = Path(__file__).parent / "data" / "dispatch_decisions.json"
FROZEN = json.loads(FIXTURE.read_text())
MAX_COLS, MAX_ROWS = 70000, 20000


def kernel_table(key: str) -> runtime.DispatchTable:
    import importlib

    op, target, direction = key.split("/")
    module = importlib.import_module(f"generated.{op}_{target}")
    return module.TABLE if direction == "forward" else module.BACKWARD_TABLE


def launch(table: runtime.DispatchTable, dtype: str, n_rows, n_cols):
    """What a call launches: the entry's launch numbers with the BLOCK_N it takes at this width."""
    try:
        e = table.lookup(dtype, n_rows, n_cols)
    except runtime.DispatchMiss:
        return "miss"
    numbers = (e.passes, e.block_m, e.num_warps, e.grid, e.multibuffer, e.ub_bytes)
    return (*numbers, e.programs_per_core, e.min_tiles, e.stages, e.block_n_for(n_cols))


def edges(lo, hi) -> set[int]:
    return {v + d for v in (lo, hi) if v is not None for d in (-1, 0, 1)}


def points(entries, limit: int, step: int, key: str) -> list[int]:
    found = {limit} | {(1 << k) + d for k in range((limit).bit_length()) for d in (-1, 0, 1)}
    found |= set(range(1, limit + 1, step))
    for e in entries:
        lo, hi = (e.cols_lo, e.cols_hi) if key == "cols" else (e.rows_lo, e.rows_hi)
        found |= edges(lo, hi)
        if key == "cols" and e.align:  # every column block's edge
            top = e.cols_hi if e.cols_hi is not None else limit
            for edge in range(e.align * (e.cols_lo // e.align), top + 1, e.align):
                found |= {edge, edge + 1}
    return sorted(v for v in found if 1 <= v <= limit)


@pytest.mark.parametrize("key", sorted(FROZEN["tables"]))
def test_table_launches_as_frozen(key):
    fields = FROZEN["fields"]
    rows = [
        runtime.Entry(dtype=dtype, **dict(zip(fields, row, strict=True)))
        for dtype, dtype_rows in FROZEN["tables"][key].items()
        for row in dtype_rows
    ]
    frozen = runtime.DispatchTable("frozen", "frozen", tuple(rows))
    table = kernel_table(key)
    assert sorted(table.by_dtype) == sorted(frozen.by_dtype), f"{key}: dtypes differ"
    for dtype in frozen.by_dtype:
        both = frozen.by_dtype[dtype] + table.by_dtype[dtype]
        widths = points(both, MAX_COLS, 499, "cols")
        row_counts = [None, *points(both, MAX_ROWS, 509, "rows")]
        for n_cols in widths:
            for n_rows in row_counts:
                want, got = launch(frozen, dtype, n_rows, n_cols), launch(table, dtype, n_rows, n_cols)
                assert got == want, f"{key} {dtype} n_cols={n_cols} n_rows={n_rows}: {got} != frozen {want}"


def test_amend_replaces_a_range_and_refuses_one_the_base_lacks():
    row = runtime.Entry(("fp16", "bf16"), 1, 16, 1, None, "single", 1, 16, 1, "tiles", False, 0)
    base = (row, row._replace(cols_lo=17, cols_hi=None))
    amended = runtime.amend(base, row._replace(dtype="bf16", num_warps=4))
    assert [(e.dtype, e.cols_lo, e.num_warps) for e in amended] == [
        ("fp16", 1, 1), ("bf16", 1, 4), ("fp16", 17, 1), ("bf16", 17, 1)
    ]  # fmt: skip
    with pytest.raises(ValueError, match="no such"):
        runtime.amend(base, row._replace(cols_hi=15))


def test_amend_splits_and_joins_the_base_ranges():
    """A run of the rows' ranges that meet replaces the base's ranges it covers, whatever their cuts, if
    it begins and ends where the base's ranges do; the other dtypes' rows stay the base's."""
    row = runtime.Entry("bf16", 1, 16, 1, None, "single", 1, 16, 1, "tiles", False, 0)
    base = (row, row._replace(cols_lo=17, cols_hi=32), row._replace(cols_lo=33, cols_hi=None))
    base += tuple(e._replace(dtype="fp16") for e in base)
    new = (row._replace(cols_lo=9, cols_hi=20, num_warps=2), row._replace(cols_lo=21, cols_hi=32, num_warps=4))
    amended = runtime.amend(base, row._replace(cols_hi=8, num_warps=8), *new)
    assert [(e.dtype, e.cols_lo, e.cols_hi, e.num_warps) for e in amended] == [
        ("bf16", 1, 8, 8), ("bf16", 9, 20, 2), ("bf16", 21, 32, 4), ("bf16", 33, None, 1),
        ("fp16", 1, 16, 1), ("fp16", 17, 32, 1), ("fp16", 33, None, 1),
    ]  # fmt: skip
    for bad in (new[:1], (row._replace(cols_lo=17, cols_hi=24),), (row._replace(dtype="fp32"),)):
        with pytest.raises(ValueError, match="no such width range boundaries"):
            runtime.amend(base, *bad)


def test_amendment_rows_rebuild_the_table():
    """The planner's amendment of a table against a base whose ranges are cut elsewhere: the base's
    rows amended by it launch as the table at every width and row count, and it writes only the
    pieces (between cuts both tables share) where the two differ."""
    from dsl.model import DType
    from dsl.table import DispatchEntry, Grid, Pass, amendment

    def entry(dtype, lo, hi, rows_lo=1, rows_hi=None, warps=1):
        return DispatchEntry(dtype, lo, hi, rows_lo, rows_hi, Pass.SINGLE, 1, 64, warps, Grid.TILES, False, 0)

    def as_runtime(e):
        fields = (e.cols_lo, e.cols_hi, e.rows_lo, e.rows_hi, e.passes.value, e.block_m, e.block_n, e.num_warps)
        return runtime.Entry(e.dtype.value, *fields, e.grid.value, e.multibuffer, e.ub_bytes)

    bf16, fp16 = DType.BF16, DType.FP16
    base = tuple(entry(d, lo, hi) for d in (bf16, fp16) for lo, hi in ((1, 16), (17, 32), (33, 64), (65, None)))
    table = (
        entry(bf16, 1, 16),
        entry(bf16, 17, 24, warps=2),
        entry(bf16, 25, 64, 1, 99),
        entry(bf16, 25, 64, 100, None, warps=4),
        entry(bf16, 65, None),
        *(e for e in base if e.dtype is fp16 and e.cols_lo < 65),
        entry(fp16, 65, None, warps=8),
    )
    written = amendment(table, base)
    assert [(e.dtype, e.cols_lo, e.cols_hi, e.rows_lo) for e in written] == [
        (bf16, 17, 24, 1), (bf16, 25, 64, 1), (bf16, 25, 64, 100), (fp16, 65, None, 1),
    ]  # fmt: skip
    want = runtime.DispatchTable("table", "t", tuple(map(as_runtime, table)))
    got = runtime.DispatchTable("amended", "t", runtime.amend(tuple(map(as_runtime, base)), *map(as_runtime, written)))
    for dtype in ("bf16", "fp16"):
        for n_cols in range(1, 80):
            for n_rows in (None, 1, 99, 100, 5000):
                assert got.lookup(dtype, n_rows, n_cols) == want.lookup(dtype, n_rows, n_cols), (dtype, n_cols, n_rows)
    assert amendment(table, tuple(e for e in base if e.dtype is bf16)) is None  # another dtype
    assert amendment(table[:-1] + (entry(fp16, 65, 99),), base) is None  # other columns
