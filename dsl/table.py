"""Dispatch tables: the rows every target's planner emits and the runtime reads."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .model import DType


class Pass(enum.Enum):
    SINGLE = "single"  # the row is one tile: x + r never leaves the chip
    MULTI = "multi"  # column loop: statistics first, then normalize


class Grid(enum.Enum):
    TILES = "tiles"  # one program per row tile
    PERSISTENT = "persistent"  # min(cores, row tiles) programs, each looping over tiles


def next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


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

    def covers(self, n_rows: int, n_cols: int) -> bool:
        return (
            self.cols_lo <= n_cols
            and (self.cols_hi is None or n_cols <= self.cols_hi)
            and self.rows_lo <= n_rows
            and (self.rows_hi is None or n_rows <= self.rows_hi)
        )
