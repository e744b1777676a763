"""The npu tuning file (``dsl/tuning/npu.json``): each op's choice for rows wider than 2048.

Up to 2048 columns the npu table follows the seed's measured rules
(``dsl/targets/npu.py``). Beyond, the file decides, per op, dtype, width bucket
and row range: one pass over a row held whole (``"single"``, BLOCK_N at least
the bucket's widest row) or the column loop (``"multi"``), the tile's rows and
columns, and multi-buffering. The seed's choice (the column loop above 2048) is
such a file too. Without a file, or for an op or dtype it has no rows for, the
table is the seed's.

Written by ``python -m benchmarks.npu_tune``: ``--defaults`` from the unified
buffer model (fitted to bishengir-compile's plans; CI plans every layout), or
``python build.py --tune npu`` from timings on an NPU. The pipeline reads it
(``load_tuning``); the planner only checks and applies it (``wide_rows``).

``{"ops": {op: {"method", ..., "best": [{dtype, cols_lo, cols_hi, rows_lo, rows_hi,
passes, block_m, block_n, multibuffer}, ...], "measurements": [...]}}}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from ..model import DType, NormSpec
from ..table import DispatchEntry, Grid, Pass
from . import TuningError, check_keys, load_tuning_file, whole

TUNING_FILE = Path(__file__).resolve().parent.parent / "tuning" / "npu.json"
SOURCE = "npu tuning file"  # (in messages where no file is named: parse_tuning of JSON already read)
WIDE_FROM = 2049  # the file's rows start here; narrower rows are the seed's
FIELDS = ("dtype", "cols_lo", "cols_hi", "rows_lo", "rows_hi", "passes", "block_m", "block_n", "multibuffer")


class Choice(NamedTuple):
    """One row of an op's section: a width bucket and row range, and its tile."""

    dtype: DType
    cols_lo: int
    cols_hi: int | None
    rows_lo: int
    rows_hi: int | None
    passes: Pass
    block_m: int
    block_n: int
    multibuffer: bool


def _choice(op: str, row: dict, source: str = SOURCE) -> Choice:
    where = f"{source}: a row of {op}"
    check_keys(where, row, FIELDS)
    try:
        dtype, passes = DType(row["dtype"]), Pass(row["passes"])
    except ValueError as error:
        raise TuningError(f"{where}: {error}") from None
    if type(row["multibuffer"]) is not bool:  # (the string "false" would be true)
        raise TuningError(f"{where}: multibuffer must be true or false, got {row['multibuffer']!r}")
    return Choice(
        dtype, whole(where, "cols_lo", row["cols_lo"]), whole(where, "cols_hi", row["cols_hi"], none=True),
        whole(where, "rows_lo", row["rows_lo"]), whole(where, "rows_hi", row["rows_hi"], none=True), passes,
        whole(where, "block_m", row["block_m"]), whole(where, "block_n", row["block_n"]), row["multibuffer"],
    )  # fmt: skip


def _check_cover(op: str, dtype: DType, choices: list[Choice], source: str = SOURCE) -> None:
    """Widths from WIDE_FROM on, contiguous up to an open end; rows 1.. once per width bucket."""
    where = f"{source}: {op} {dtype.value}"
    buckets: dict[tuple, list[Choice]] = {}
    for c in choices:
        buckets.setdefault((c.cols_lo, c.cols_hi), []).append(c)
    expected = WIDE_FROM
    ordered = sorted(buckets, key=lambda b: b[0])
    for number, (lo, hi) in enumerate(ordered):
        if lo != expected:
            raise TuningError(f"{where}: widths {expected}.. are not covered once (a bucket starts at {lo})")
        rows = sorted(buckets[lo, hi], key=lambda c: c.rows_lo)
        next_row = 1
        for c in rows:
            if c.rows_lo != next_row:
                raise TuningError(f"{where} cols {lo}..{hi}: rows {next_row}.. are not covered once")
            next_row = None if c.rows_hi is None else c.rows_hi + 1
        if next_row is not None:
            raise TuningError(f"{where} cols {lo}..{hi}: rows {next_row}.. are not covered")
        if hi is None:
            if number + 1 < len(ordered):  # (a 2026-11-29 audit: such a row was accepted, and never used)
                later = ordered[number + 1]
                raise TuningError(
                    f"{where}: widths {later[0]}..{later[1] or ''} lie in the open bucket {lo}.. (never used)"
                )
            return
        expected = hi + 1
    raise TuningError(f"{where}: widths {expected}.. are not covered (the last bucket has no upper bound)")


def _check_tile(op: str, c: Choice, align: int, source: str = SOURCE) -> None:
    where = f"{source}: {op} {c.dtype.value} cols {c.cols_lo}..{c.cols_hi or ''} rows {c.rows_lo}.."
    if c.block_m < 1 or c.block_n < align or c.block_n % align:
        raise TuningError(f"{where}: a {c.block_m}x{c.block_n} tile (columns: a multiple of {align})")
    if c.passes is Pass.SINGLE and (c.cols_hi is None or c.block_n < c.cols_hi):
        raise TuningError(f"{where}: a single-pass tile must hold the bucket's widest row ({c.block_n} columns)")


def parse_tuning(data: dict, source: str = SOURCE) -> dict:
    """The file's JSON -> {"ops": {op: {dtype: (Choice, ...)}}}, each dtype's rows checked to cover
    every width from 2049 and every row count once (single-pass tiles holding the whole row)."""
    from ..model import DTYPE_BYTES
    from .npu import ALIGN_BYTES

    check_keys(source, data, ("ops",))
    if not isinstance(data["ops"], dict):
        raise TuningError(f"{source}: ops must map op names to sections")
    ops = {}
    for op, section in data["ops"].items():
        check_keys(f"{source}: {op}", section, ("best",), ("method", "device", "date", "measurements"))
        if not isinstance(section["best"], list):
            raise TuningError(f"{source}: {op}: best must be a list of rows")
        by_dtype: dict[DType, list[Choice]] = {}
        for row in section["best"]:
            choice = _choice(op, row, source)
            _check_tile(op, choice, ALIGN_BYTES // DTYPE_BYTES[choice.dtype], source)
            by_dtype.setdefault(choice.dtype, []).append(choice)
        for dtype, choices in by_dtype.items():
            _check_cover(op, dtype, choices, source)
        ops[op] = {dtype: tuple(sorted(c, key=lambda c: (c.cols_lo, c.rows_lo))) for dtype, c in by_dtype.items()}
    return {"ops": ops}


def load_tuning(path: Path = TUNING_FILE) -> dict | None:
    """The parsed file, or None when there is none (the pipeline calls this, never the planner)."""
    return load_tuning_file(path, parse_tuning)


def wide_rows(spec: NormSpec, dtype: DType, tuning: dict | None) -> tuple[Choice, ...]:
    """The file's rows for this op and dtype (empty: the seed's table above 2048)."""
    if not tuning:
        return ()
    return tuning["ops"].get(spec.name, {}).get(dtype, ())


def tuned_entry(spec: NormSpec, c: Choice) -> DispatchEntry:
    """A row of the tuning file as it stands: a tile the compiler cannot plan is an error, not halved."""
    from .npu_ub import UB_BYTES, multibuffer_fits, ub_bytes, ub_least

    where = f"npu tuning file: {spec.name} {c.dtype.value} cols {c.cols_lo}..{c.cols_hi or ''} rows {c.rows_lo}.."
    least = ub_least(spec, c.dtype, c.passes, c.block_m, c.block_n)
    if least > UB_BYTES:
        raise TuningError(
            f"{where}: the {c.passes.value}-pass {c.block_m}x{c.block_n} tile needs {least} bytes, over the "
            f"{UB_BYTES}-byte unified buffer (python -m benchmarks.npu_tune --defaults rewrites the file)"
        )
    if c.multibuffer and not multibuffer_fits(spec, c.dtype, c.passes, c.block_m, c.block_n):
        raise TuningError(
            f"{where}: multi-buffered, the {c.block_m}x{c.block_n} tile does not fit (the compiler would fall back)"
        )
    return DispatchEntry(
        dtype=c.dtype,
        cols_lo=c.cols_lo,
        cols_hi=c.cols_hi,
        rows_lo=c.rows_lo,
        rows_hi=c.rows_hi,
        passes=c.passes,
        block_m=c.block_m,
        block_n=c.block_n,
        num_warps=1,
        grid=Grid.PERSISTENT,
        multibuffer=c.multibuffer,
        ub_bytes=ub_bytes(spec, c.dtype, c.passes, c.block_m, c.block_n, c.multibuffer),
    )


def tuning_text(data: dict) -> str:
    """Sorted keys, two-space indent, a row of ``best`` and ``measurements`` per line."""
    lines = ["{", ' "ops": {']
    ops = sorted(data["ops"].items())
    for i, (op, section) in enumerate(ops):
        lines.append(f"  {json.dumps(op)}: {{")
        keys = sorted(section)
        for j, key in enumerate(keys):
            end = "," if j < len(keys) - 1 else ""
            value = section[key]
            if isinstance(value, list):
                items = [f"    {json.dumps(item, sort_keys=True)}" for item in value]
                body = ",\n".join(items)
                lines.append(
                    f"   {json.dumps(key)}: [\n{body}\n   ]{end}" if items else f"   {json.dumps(key)}: []{end}"
                )
            else:
                lines.append(f"   {json.dumps(key)}: {json.dumps(value, sort_keys=True)}{end}")
        lines.append("  }" + ("," if i < len(ops) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"
