"""Dispatch tables at run time (hand-written): a target's rows and their lookup.

The generated tables (``generated/_<target>_tables.py``) hold ``Entry`` rows, which the
planner decides (``dsl/table.py``'s ``DispatchEntry``); each kernel module wraps its
direction's rows in a ``DispatchTable``, which its ``Launcher`` (``dsl/runtime.py``)
looks up per launch key. ``dsl/runtime.py`` re-exports the three names (the generated
code names ``runtime.Entry`` and ``runtime.DispatchTable``).
"""

from __future__ import annotations

from typing import NamedTuple


def split_columns(block_n: int) -> int:
    """Columns per column program of a split grid (dsl/table.py's Grid.SPLIT) whose row tiles are
    ``block_n`` wide; they sum tiles of 4096 elements, 8192 at 128 columns (the kernels' SPLIT_M,
    dsl/templates/backward_macros.jinja). H200, bf16 rmsnorm, add_rmsnorm and layernorm,
    1-511 rows: 32 columns the fastest tried from 128 rows at 256-8192 columns (0.4-0.9x the time
    of 64 at 256-4096, 0.7-0.9x of 128 at 8192; at 1-32 rows up to 0.8 µs slower than those);
    128 at 16384 columns (0.6-0.8x the time of 32, at 1-255 rows)."""
    return 32 if block_n <= 8192 else 128


def block_n_for(block_n: int, align: int, n_cols: int) -> int:
    """An entry's BLOCK_N for a width: ``block_n``, or with ``align`` set the width rounded up to a
    multiple of ``align`` (never past ``block_n``, the entry's widest). One rule for the launcher
    and the planner (``dsl/table.py``), which plans every block an entry covers by it."""
    return min(block_n, -(-n_cols // align) * align) if align else block_n


class Entry(NamedTuple):
    """One row of a dispatch table (see dsl/plan.py, DispatchEntry). A generated table's row may
    name several dtypes, a tuple (dsl/table.py's dtype_rows); DispatchTable holds one row per dtype."""

    dtype: str  # in a generated table: or a tuple of the dtypes that share the row
    cols_lo: int
    cols_hi: int | None
    rows_lo: int
    rows_hi: int | None
    passes: str
    block_m: int
    block_n: int
    num_warps: int
    grid: str
    multibuffer: bool
    ub_bytes: int
    programs_per_core: int = 1
    min_tiles: int = 1
    stages: int = 1
    align: int = 0  # BLOCK_N is the width rounded up to a multiple of this, up to block_n (0: block_n)

    def block_n_for(self, n_cols: int) -> int:
        return block_n_for(self.block_n, self.align, n_cols)


def per_dtype(entries: tuple[Entry, ...]) -> tuple[Entry, ...]:
    """The rows with one dtype each: a row naming several (a tuple) once per dtype, in its place."""
    return tuple(e._replace(dtype=d) for e in entries for d in (e.dtype if isinstance(e.dtype, tuple) else (e.dtype,)))


def width_groups(entries) -> dict[tuple, tuple]:
    """(dtype, cols_lo, cols_hi) -> the rows of that width range, in order: of the runtime's rows
    (one dtype each) and of the planner's (``dsl/table.py``)."""
    groups: dict[tuple, list] = {}
    for e in entries:
        groups.setdefault((e.dtype, e.cols_lo, e.cols_hi), []).append(e)
    return {key: tuple(rows) for key, rows in groups.items()}


def amend(base: tuple[Entry, ...], *rows: Entry) -> tuple[Entry, ...]:
    """``base``'s rows, those of the width ranges that ``rows`` cover replaced by ``rows``' rows there:
    a table written as another's but for a few width ranges. Per dtype, a run of ``rows``' ranges
    that meet may split or join ``base``'s ranges, but it must begin and end where ``base``'s do."""
    new, old = width_groups(per_dtype(rows)), width_groups(per_dtype(base))
    replaced: dict[tuple, tuple] = {}  # base's width ranges -> what they become (a run's rows, at its first)
    for run in _runs(new):
        dtype, lo, hi = run[0][0], run[0][1], run[-1][2]
        inside = sorted(
            (k for k in old if k[0] == dtype and k[1] >= lo and (hi is None or (k[2] is not None and k[2] <= hi))),
            key=lambda k: k[1],
        )
        if not inside or inside[0][1] != lo or inside[-1][2] != hi:  # a mistake, not a new range
            raise ValueError(f"amend: no such width range boundaries in the base table: ({dtype!r}, {lo}, {hi})")
        replaced.update(dict.fromkeys(inside, ()))
        replaced[inside[0]] = tuple(e for key in run for e in new[key])
    return tuple(e for key, rows_of in old.items() for e in replaced.get(key, rows_of))


def _runs(groups: dict[tuple, tuple]) -> list[list[tuple]]:
    """The (dtype, cols_lo, cols_hi) keys of ``groups`` as runs of ranges that meet, per dtype."""
    runs: list[list[tuple]] = []
    for key in sorted(groups, key=lambda k: (str(k[0]), k[1])):
        last = runs[-1][-1] if runs else None
        if last and last[0] == key[0] and last[2] is not None and last[2] + 1 == key[1]:
            runs[-1].append(key)
        else:
            runs.append([key])
    return runs


class DispatchMiss(LookupError):
    pass


class DispatchTable:
    """(dtype, columns, rows) -> Entry; a plain scan of a short per-dtype list."""

    def __init__(self, op: str, target: str, entries: tuple[Entry, ...]):
        self.op, self.target = op, target
        self.by_dtype: dict[str, list[Entry]] = {}
        for entry in per_dtype(entries):
            self.by_dtype.setdefault(entry.dtype, []).append(entry)
        for rows in self.by_dtype.values():  # in width order, however the table lists shared rows
            rows.sort(key=lambda e: (e.cols_lo, e.rows_lo))
        self.entries = tuple(e for rows in self.by_dtype.values() for e in rows)  # one dtype's, then the next's

    def lookup(self, dtype: str, n_rows: int | None, n_cols: int) -> Entry:
        """The entry of a call; ``n_rows`` None (a row count not known when deciding, as under
        torch.compile with dynamic shapes): the entry of the most rows, the open-ended range."""
        for e in self.by_dtype.get(dtype, ()):
            if (
                e.cols_lo <= n_cols
                and (e.cols_hi is None or n_cols <= e.cols_hi)
                and (
                    e.rows_hi is None
                    if n_rows is None
                    else e.rows_lo <= n_rows and (e.rows_hi is None or n_rows <= e.rows_hi)
                )
            ):
                return e
        raise DispatchMiss(
            f"{self.op} ({self.target}): no dispatch entry for dtype={dtype}, n_cols={n_cols}, n_rows={n_rows}"
        )
