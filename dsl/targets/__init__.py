"""Per-target planning rules behind one interface.

A target module defines a ``TargetRules`` subclass: its dispatch table (block
sizes, warps, grid policy per dtype, width range and row range), whether its
kernels take the VEC constexpr and its launch options.
The target-neutral planner (``dsl/plan.py``) asks ``rules(target)`` and never
branches on the target itself. Adding a target: a module here, an entry in
``_RULES``, a value of ``dsl.model.Target``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

from ..model import NormSpec, Target
from ..table import DispatchEntry


class TuningError(ValueError):
    """A tuning file the planner cannot follow as written; the message names the file and the row.
    ``build.py`` reports it as an input error (exit status 2)."""


def load_tuning_file(path: Path, parse) -> dict | None:
    """A target's tuning file read and checked by its ``parse(data, shown)``, or None when there is
    none; every message names the file as ``display`` shows it."""
    if not path.exists():
        return None
    shown = display(path)
    return parse(read_tuning_json(path, shown), shown)


def read_tuning_json(path: Path, where: str) -> dict:
    """A tuning file's JSON object. A key twice in one object (a merge resolved badly: json.loads
    would keep the last) and text that is not JSON are refused, naming the file (as ``where``)."""

    def unique(pairs: list[tuple]) -> dict:
        keys = [key for key, _ in pairs]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise TuningError(f"{where}: the key {twice[0]!r} appears twice in one object")
        return dict(pairs)

    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique)
    except json.JSONDecodeError as error:
        raise TuningError(f"{where}: not valid JSON ({error})") from None
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        raise TuningError(f"{where}: not UTF-8 text (byte 0x{byte:02x} at offset {error.start})") from None
    except RecursionError:
        raise TuningError(f"{where}: its JSON nests too deep to read") from None
    if not isinstance(data, dict):
        raise TuningError(f"{where}: the file must hold one JSON object")
    return data


def display(path: Path) -> str:
    """A tuning file's name in messages: from the checkout's root where it is inside it."""
    root = Path(__file__).resolve().parent.parent.parent
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def check_keys(where: str, obj: object, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """An object of a tuning file holds every required key and no key it does not know (a misspelled
    key would be ignored)."""
    if not isinstance(obj, dict):
        raise TuningError(f"{where}: expected a JSON object, got {obj!r}")
    missing = [key for key in required if key not in obj]
    unknown = sorted(key for key in obj if key not in required + optional)
    if missing:
        raise TuningError(f"{where}: lacks {', '.join(missing)}")
    if unknown:
        known = ", ".join(required + optional)
        raise TuningError(f"{where}: unknown key {unknown[0]!r} (the keys are {known})")


def whole(where: str, key: str, value: object, low: int = 1, high: int | None = None, pow2: bool = False,
          none: bool = False) -> int | None:  # fmt: skip
    """A whole-number field of a tuning file's row (JSON true, 4096.0 or "8" are refused: the generated
    tables print the value as it is)."""
    if value is None and none:
        return None
    if type(value) is not int:
        raise TuningError(f"{where}: {key} must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high) or (pow2 and value & (value - 1)):
        span = f"{low}..{high}" if high is not None else f"{low} or more"
        raise TuningError(f"{where}: {key} {value} is not {'a power of two ' if pow2 else ''}in {span}")
    return value


class TargetRules(ABC):
    target: Target
    vector_width: bool = False  # kernels take VEC (the widest vector dividing n_cols and the row strides)
    launch_options: tuple[tuple[str, object], ...] = ()  # extra compile options of every launch
    # A program's elements are spread over threads (cuda): a program that reads back what it
    # wrote to global memory needs a barrier between (an npu program runs on one core).
    program_barrier: bool = False
    # The forward's multi-pass kernel stores s = x + r in its first pass (pre mode) and its later
    # passes read s back instead of x and r: a program that runs in order on one core (npu).
    reads_back_sum: bool = False
    # The backward's row-tile loop is software-pipelined (tl.range(num_stages=LOOP_STAGES), the
    # depth from each dispatch entry); False: a plain range.
    pipelined_tile_loop: bool = False
    # The backward's single-pass kernel takes SPLIT_N, for the split grid (dsl/table.py's Grid.SPLIT).
    split_backward: bool = False
    # The backward's single-pass kernel loads ds (pre mode) with dy and s, before the row's sums, where
    # it would otherwise wait for them: loops of one stage, ops without a bias; in a program that keeps
    # dw's sums (not the split grid's row programs), ds tiles of at most this many bits (BLOCK_M *
    # BLOCK_N * the dtype's bits). 0: never (npu: its kernels keep their unified-buffer plan).
    early_ds: int = 0
    # The backward's single pass adds each tile's share of dw (and db) to the program's sums before
    # the row's sums, not after dx, in tiles wider than this many columns: dy is then dead across
    # the row's sums (fewer registers). 0: never.
    early_sums: int = 0
    # The backward's single pass takes SMALL_OFFSETS (the launcher's: every row's offset fits in int32)
    # and then computes its rows' offsets in int32 (int64 otherwise), but in pre mode's calls with ds.
    small_offsets: bool = False
    # The quantized kernels' GPU forms: one NaN-keeping max reduction for the row's amax, y / scale
    # from one reciprocal per row and an fma correction, and the device's own conversions: fp8 where
    # it has one (the NATIVE_FP8 constexpr), int8 rounded, saturated and NaN to 0 in one instruction
    # (NATIVE_INT8; off in the interpreter, which rounds by an addition); the same bits as the
    # portable forms (False: npu, whose kernels keep those).
    fast_quantize: bool = False
    # The multi-pass kernels hint the L2 cache: loads of the passes that a later pass re-reads
    # keep their lines (evict_last), the last pass's loads let them go (evict_first). The forward's
    # kernels of two passes and every backward (docs/bench/hints/).
    eviction_hints: bool = False

    def options(self, spec: NormSpec) -> tuple[tuple[str, object], ...]:
        """The compile options of every launch of this spec's kernels."""
        return self.launch_options

    @abstractmethod
    def table(self, spec: NormSpec, tuning: dict | None) -> tuple[DispatchEntry, ...]:
        """The dispatch table; ``tuning`` is this op's measured data, as the pipeline read it (None: none)."""

    @abstractmethod
    def backward_table(self, spec: NormSpec, tuning: dict | None) -> tuple[DispatchEntry, ...]:
        """The backward kernels' dispatch table (persistent grids: one partial-sum row per program)."""

    @abstractmethod
    def tuning_source(self, spec: NormSpec, tuning: dict | None) -> str:
        """Where the table's numbers come from, for the generated module's docstring."""


def rules(target: Target) -> TargetRules:
    from . import cuda, npu

    return {Target.CUDA: cuda.RULES, Target.NPU: npu.RULES}[target]
