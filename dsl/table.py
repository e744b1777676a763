"""Dispatch tables: the rows every target's planner emits and the runtime reads."""

from __future__ import annotations

import enum
from bisect import bisect_right
from dataclasses import dataclass, replace
from itertools import pairwise

from .dispatch import block_n_for, width_groups
from .model import DType


class Pass(enum.Enum):
    SINGLE = "single"  # the row is one tile: x + r never leaves the chip
    MULTI = "multi"  # column loop: statistics first, then normalize


class Grid(enum.Enum):
    TILES = "tiles"  # one program per row tile
    PERSISTENT = "persistent"  # min(cores, row tiles) programs, each looping over tiles
    # backward, few rows (cuda; layer norms' 8193-16384 columns up to thousands of rows): one program per row
    # tile (dx), then one per few columns (dispatch.py's split_columns) that sums dw (db) over every row
    # and writes it: one launch, no partial sums
    SPLIT = "split"


def next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def column_blocks(cols_lo: int, cols_hi: int | None, block_n: int, align: int) -> tuple[tuple, ...]:
    """(cols_lo, cols_hi, BLOCK_N) of each column block an entry covers, narrowest first."""
    if not align:
        return ((cols_lo, cols_hi, block_n),)
    blocks, lo = [], cols_lo
    while cols_hi is not None and lo <= cols_hi:
        block = block_n_for(block_n, align, lo)
        blocks.append((lo, min(block, cols_hi), block))
        lo = block + 1
    return tuple(blocks)


@dataclass(frozen=True)
class DispatchEntry:
    dtype: DType
    cols_lo: int
    cols_hi: int | None  # None: no upper bound
    rows_lo: int
    rows_hi: int | None
    passes: Pass
    block_m: int
    block_n: int
    num_warps: int
    grid: Grid
    multibuffer: bool  # npu: double buffering (halves the usable unified buffer)
    ub_bytes: int  # npu: the tile's unified-buffer footprint (0 on cuda)
    programs_per_core: int = 1  # persistent grids: programs per SM / vector core
    min_tiles: int = 1  # persistent grids: at least this many row tiles per program (fewer programs)
    stages: int = 1  # software-pipelining depth of the row-tile loop (kernels that take LOOP_STAGES)
    # Single pass over several column blocks: BLOCK_N is the width rounded up to a multiple of this
    # (block_n is the widest; ub_bytes the most of the blocks); 0: BLOCK_N is block_n.
    align: int = 0

    def block_n_for(self, n_cols: int) -> int:
        return block_n_for(self.block_n, self.align, n_cols)

    def spans(self) -> tuple[DispatchEntry, ...]:
        """The entry of each column block it covers (itself where ``align`` is 0), ub_bytes as its."""
        blocks = column_blocks(self.cols_lo, self.cols_hi, self.block_n, self.align)
        return tuple(replace(self, cols_lo=lo, cols_hi=hi, block_n=n, align=0) for lo, hi, n in blocks)

    def covers(self, n_rows: int, n_cols: int) -> bool:
        return (
            self.cols_lo <= n_cols
            and (self.cols_hi is None or n_cols <= self.cols_hi)
            and self.rows_lo <= n_rows
            and (self.rows_hi is None or n_rows <= self.rows_hi)
        )


def merge_rows(entries: tuple[DispatchEntry, ...]) -> tuple[DispatchEntry, ...]:
    """Neighbouring entries of one width range whose row ranges meet and that launch alike, as one."""
    merged: list[DispatchEntry] = []
    for e in entries:
        m = merged[-1] if merged else None
        if m and m.rows_hi is not None and m.rows_hi + 1 == e.rows_lo:
            if replace(m, rows_hi=e.rows_hi) == replace(e, rows_lo=m.rows_lo):
                merged[-1] = replace(m, rows_hi=e.rows_hi)
                continue
        merged.append(e)
    return tuple(merged)


def dtype_rows(entries: tuple[DispatchEntry, ...]) -> tuple[tuple[tuple[DType, ...], DispatchEntry], ...]:
    """The rows a table is written with: (dtypes, entry). Each dtype's rows of a width range that equal
    an earlier dtype's rows of that range in every field but the dtype are written once, as that
    dtype's (fp16 and bf16 mostly launch alike); in width order, a range's rows by dtype."""
    groups = width_groups(entries)
    alike = {key: tuple(replace(e, dtype=None) for e in rows) for key, rows in groups.items()}
    written, done = [], set()
    for key, rows in groups.items():
        if key in done:
            continue
        partners = [k for k in groups if k not in done and k[1:] == key[1:] and alike[k] == alike[key]]
        done.update(partners)
        written += [(tuple(k[0] for k in partners), e) for e in rows]
    order = {key[0]: i for i, key in reversed(list(enumerate(groups)))}  # dtypes in their first row's order
    return tuple(sorted(written, key=lambda row: (row[1].cols_lo, order[row[0][0]], row[1].rows_lo)))


def amendment(entries: tuple[DispatchEntry, ...], base: tuple[DispatchEntry, ...]) -> tuple[DispatchEntry, ...] | None:
    """The rows where ``entries`` differ from ``base`` (the table is then written as its base amended,
    dsl/dispatch.py's amend), or None where the two have different dtypes or columns. Per dtype, the
    columns are cut where both tables start a width range; each piece whose rows differ is written
    whole (its ranges may split or join the base's)."""
    mine, theirs = width_groups(entries), width_groups(base)
    dtypes = list(dict.fromkeys(key[0] for key in mine))
    if dtypes != list(dict.fromkeys(key[0] for key in theirs)):
        return None
    written: list[DispatchEntry] = []
    for dtype in dtypes:
        a, b = (sorted((k for k in g if k[0] == dtype), key=lambda k: k[1]) for g in (mine, theirs))
        if not (_partition(a) and _partition(b) and a[-1][2] == b[-1][2]):
            return None
        cuts = sorted({k[1] for k in a} & {k[1] for k in b})
        for rows_a, rows_b in zip(_pieces(cuts, a, mine), _pieces(cuts, b, theirs), strict=True):
            if rows_a != rows_b:
                written += rows_a
    return tuple(written)


def _pieces(cuts: list[int], keys: list[tuple], groups: dict[tuple, tuple]) -> list[list[DispatchEntry]]:
    """The rows of ``keys``' width ranges, per piece of the columns that starts at each of ``cuts``."""
    pieces: list[list[DispatchEntry]] = [[] for _ in cuts]
    for key in keys:
        pieces[bisect_right(cuts, key[1]) - 1] += groups[key]
    return pieces


def _partition(keys: list[tuple]) -> bool:
    """Whether sorted (dtype, cols_lo, cols_hi) keys cover the columns from 1 without a gap or overlap."""
    return bool(keys) and keys[0][1] == 1 and all(k[2] is not None and k[2] + 1 == n[1] for k, n in pairwise(keys))
