"""Measure launch configs for the cuda dispatch table on this GPU; write dsl/tuning/cuda.json.

    python build.py --tune cuda             calls tune(spec_dir); then `python build.py` uses the file
    python -m benchmarks.tune [--out dsl/tuning/cuda.json] [--quick] [--dtypes bf16,fp32] [--time-limit S]
    python -m benchmarks.tune --self-test   no GPU: buckets, candidates, and the JSON read back by dsl/plan.py

The buckets are the cuda table's own (dsl/plan.py ``cuda_table``: a width bucket per
power of two up to the single-pass limit, one multi-pass bucket, times the row
buckets of ``CUDA_ROW_BUCKETS``). For each bucket and dtype the candidates are
rows per program (BLOCK_M), warps, and the grid (one program per row tile, or a
persistent grid of programs_per_sm programs per SM), measured through the generated
op with its launcher swapped for a one-entry table: device time from CUDA-graph
replay (benchmarks/timing.py) on representative shapes of the bucket (its upper
width and, for wide buckets, a ragged one; a few row counts in its range; pre and
post). A candidate's score is the geometric mean over those shapes of its time
over the best time any candidate reached there; the lowest score wins, and the
planner's own default is kept when it is within 1 %. Every candidate's output is
checked against torch eager. Kernels are compiled ahead in worker processes
(filling Triton's on-disk cache) while the main process measures.

Interfaces used (adapt here if they change): ``LAUNCHER`` as a global of the
generated cuda module, looked up by the op at each call; ``runtime.Launcher``
built from a ``DispatchTable`` of ``runtime.Entry`` rows, with ``decide(mode,
dtype, rows, cols, device) -> (kernel, grid, options, entry)`` called on a new
shape; ``runtime.variant_key`` and the module's ``KERNELS``.

fp16 is not measured by default: its rows copy bf16's (same element size, same
memory behaviour), marked ``"measured_as": "bf16"``; ``--dtypes bf16,fp16,fp32``
measures it too.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import importlib
import json
import math
import multiprocessing
import os
import re
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks import timing

OP = "add_rmsnorm"  # the op measured; its configs stand for every spec's cuda table
MODULE = "generated.add_rmsnorm_cuda"
EPS = 1e-6
MODES = ("pre", "post")
ROW_SAMPLES = (1, 64, 512, 1024, 8192, 65536)  # row counts measured, where a bucket's range has them
QUICK_ROW_SAMPLES = (1, 512, 4096)
QUICK_WIDTHS = (128, 1024, 4096, 8192)
MAX_ELEMENTS = 64 * 2**20  # per tensor: 128 MiB in bf16
MAX_TILE = 16384  # BLOCK_M * BLOCK_N elements, beyond one row
MAX_PER_THREAD = 64  # elements of a tile one thread holds, at most
BLOCK_MS = (1, 2, 4, 8, 16)
PERSISTENT_PPS = (1, 2, 4)  # programs per SM tried for the persistent grid
STAGE2_TOP = 2  # best tile configs retried with persistent grids
KEEP_DEFAULT_WITHIN = 1.01
REPS = 5
DEFAULT_DTYPES = ("bf16", "fp32")


@dataclass(frozen=True, order=True)
class Config:
    block_m: int
    num_warps: int
    grid: str = "tiles"  # tiles or persistent
    programs_per_sm: int = 1  # persistent only

    @property
    def label(self) -> str:
        grid = f"persistent x{self.programs_per_sm}" if self.grid == "persistent" else "tiles"
        return f"BLOCK_M {self.block_m}, {self.num_warps} warps, {grid}"


@dataclass(frozen=True)
class Bucket:
    dtype: str
    cols_lo: int
    cols_hi: int | None
    rows_lo: int
    rows_hi: int | None
    passes: str  # single or multi
    block_n: int
    default: Config

    @property
    def name(self) -> str:
        cols = f"{self.cols_lo}..{self.cols_hi}" if self.cols_hi else f"{self.cols_lo}+"
        rows = f"{self.rows_lo}..{self.rows_hi}" if self.rows_hi else f"{self.rows_lo}+"
        return f"{self.dtype} cols {cols} rows {rows}"


@dataclass(frozen=True)
class Cell:
    """One representative shape and mode of a bucket."""

    mode: str
    rows: int
    cols: int

    @property
    def name(self) -> str:
        return f"{self.mode} {self.rows}x{self.cols}"


@dataclass
class BucketResult:
    bucket: Bucket
    cells: list[Cell]
    times: dict[Config, list[float]] = field(default_factory=dict)  # µs per cell, in cell order
    invalid: dict[Config, str] = field(default_factory=dict)
    best: Config | None = None  # what the table gets (expressible by the runtime)
    best_any: Config | None = None  # the best measured, programs_per_sm included

    def scores(self) -> dict[Config, float]:
        if not self.times:
            return {}
        floor = [min(t[i] for t in self.times.values()) for i in range(len(self.cells))]
        return {
            config: math.exp(sum(math.log(t / f) for t, f in zip(times, floor, strict=True)) / len(floor))
            for config, times in self.times.items()
        }


# ----------------------------------------------------------------------------
# What to measure (pure Python: the self-test runs it on CPU)


def load_spec(spec_dir: Path | None):
    """The spec whose cuda table is tuned; without the parser (no lark), a stand-in with every dtype."""
    from dsl.model import DType

    try:
        from dsl import pipeline
    except ImportError as error:
        print(f"note: cannot load specs ({error}); tuning {OP} for fp32, fp16, bf16", file=sys.stderr)
        return SimpleNamespace(name=OP, dtypes=tuple(DType))
    specs = pipeline.load_specs(spec_dir or pipeline.SPECS)
    for spec in specs:
        if spec.name == OP:
            return spec
    raise SystemExit(f"tune: no op named {OP} among the specs in {spec_dir}; it is the op the tuner measures")


def buckets(spec, dtypes: list[str], quick: bool = False) -> list[Bucket]:
    """The cuda table's buckets (planner defaults as each bucket's default config), in measuring order."""
    from dsl.plan import cuda_table

    result = []
    for entry in cuda_table(spec, {}):
        if entry.dtype.value not in dtypes:
            continue
        if quick and entry.cols_hi not in QUICK_WIDTHS:
            continue
        default = Config(entry.block_m, entry.num_warps, entry.grid.value)
        result.append(
            Bucket(
                entry.dtype.value,
                entry.cols_lo,
                entry.cols_hi,
                entry.rows_lo,
                entry.rows_hi,
                entry.passes.value,
                entry.block_n,
                default,
            )
        )
    return sorted(result, key=lambda b: dtypes.index(b.dtype))  # stable: table order within a dtype


def widths(bucket: Bucket, quick: bool = False) -> list[int]:
    """The bucket's upper width (no column mask) and, for wide buckets, a ragged width (masked)."""
    if bucket.cols_hi is None:  # multi pass: twice the single-pass limit, and one with a partial block
        full = 2 * (bucket.cols_lo - 1)
        ragged = (bucket.cols_lo - 1) * 5 // 4 + 64
    else:
        full = bucket.cols_hi
        ragged = (3 * bucket.cols_hi // 4) // 16 * 16 if bucket.cols_hi >= 1024 else 0
    if quick or not ragged or ragged < bucket.cols_lo:
        return [full]
    return [full, ragged]


def row_counts(bucket: Bucket, width: int, quick: bool = False) -> list[int]:
    samples = QUICK_ROW_SAMPLES if quick else ROW_SAMPLES
    picks = [r for r in samples if r >= bucket.rows_lo and (bucket.rows_hi is None or r <= bucket.rows_hi)]
    if not picks:
        picks = [bucket.rows_lo] + ([bucket.rows_hi] if bucket.rows_hi and bucket.rows_hi != bucket.rows_lo else [])
    fitting = [r for r in picks if r * width <= MAX_ELEMENTS]
    return fitting or picks[:1]


def cells(bucket: Bucket, quick: bool = False) -> list[Cell]:
    return [
        Cell(mode, rows, width)
        for width in widths(bucket, quick)
        for rows in row_counts(bucket, width, quick)
        for mode in MODES
    ]


def candidates(bucket: Bucket, quick: bool = False) -> list[Config]:
    """Stage 1: rows per program x warps on the tile grid, bounded by what a thread can hold.

    Warps: at most MAX_PER_THREAD elements per thread, at least one 16-byte vector.
    """
    per_vector = max(1, 16 // timing.element_bytes(bucket.dtype))
    block_ms = BLOCK_MS if bucket.passes == "single" else (1, 2, 4)
    if quick:
        block_ms = block_ms[:3]
    result = []
    for block_m in block_ms:
        elements = block_m * bucket.block_n
        if block_m > 1 and elements > MAX_TILE:
            continue
        low = max(1, elements // (32 * MAX_PER_THREAD))
        high = max(low, min(32, elements // (32 * per_vector)))
        warps = low
        while warps <= high:
            result.append(Config(block_m, warps))
            warps *= 2
    if bucket.default not in result:
        result.append(bucket.default)
    return sorted(result)


def compile_key(bucket: Bucket, config: Config, cell: Cell) -> tuple:
    """What makes Triton compile a new kernel: variant, constexprs, warps, integer specializations."""
    masks = (cell.rows % config.block_m != 0, cell.cols % bucket.block_n != 0)
    ints = (cell.rows == 1, cell.rows % 16 == 0, cell.cols % 16 == 0)
    return (bucket.dtype, cell.mode, bucket.passes, masks, config.block_m, bucket.block_n, config.num_warps, ints)


def stage2(result: BucketResult, sm_count: int, top: int) -> list[Config]:
    """Persistent grids for the best tile configs, where they launch fewer programs than the tiles."""
    scores = result.scores()
    ranked = sorted((c for c in scores if c.grid == "tiles"), key=lambda c: scores[c])[:top]
    extra = []
    for config in ranked:
        for pps in PERSISTENT_PPS:
            tiles = [math.ceil(cell.rows / config.block_m) for cell in result.cells]
            if all(min(sm_count * pps, t) == t for t in tiles):
                continue  # the same launch as the tile grid on every shape
            extra.append(replace(config, grid="persistent", programs_per_sm=pps))
    return extra


def runtime_has_pps() -> bool:
    """Whether the runtime's dispatch entries carry programs_per_sm (else persistent means one per SM)."""
    from dsl import runtime

    return "programs_per_sm" in runtime.Entry._fields


def choose(result: BucketResult, native_pps: bool) -> None:
    scores = result.scores()
    if not scores:
        return
    result.best_any = min(scores, key=lambda c: (scores[c], c))
    allowed = {c: s for c, s in scores.items() if native_pps or c.programs_per_sm == 1}
    best = min(allowed, key=lambda c: (allowed[c], c))
    near = [c for c in allowed if allowed[c] <= allowed[best] * KEEP_DEFAULT_WITHIN]
    if result.bucket.default in near:
        best = result.bucket.default  # no measurable gain: keep the planner's choice (stable diffs)
    else:  # within the noise, the simpler launch: tiles, then fewer programs per SM
        best = min(near, key=lambda c: (c.grid != "tiles", c.programs_per_sm, allowed[c], c))
    result.best = best


# ----------------------------------------------------------------------------
# The JSON that dsl/plan.py load_cuda_tuning reads


def best_rows(results: list[BucketResult], spec_dtypes: list[str], native_pps: bool) -> list[dict]:
    rows = []
    for result in results:
        if result.best is None:
            continue
        scores = result.scores()
        b, config = result.bucket, result.best
        row = {
            "dtype": b.dtype,
            "cols_hi": b.cols_hi,
            "rows_lo": b.rows_lo,
            "block_m": config.block_m,
            "num_warps": config.num_warps,
            "grid": config.grid,
            "score": round(scores[config], 4),
            "speedup_vs_default": round(scores[b.default] / scores[config], 4) if b.default in scores else None,
        }
        if config.grid == "persistent" and native_pps:
            row["programs_per_sm"] = config.programs_per_sm
        rows.append(row)
    measured = {row["dtype"] for row in rows}
    if "fp16" in spec_dtypes and "fp16" not in measured and "bf16" in measured:
        rows += [{**row, "dtype": "fp16", "measured_as": "bf16"} for row in rows if row["dtype"] == "bf16"]
    order = {"fp32": 0, "fp16": 1, "bf16": 2}
    big = 1 << 62
    return sorted(rows, key=lambda r: (order.get(r["dtype"], 9), r["cols_hi"] or big, r["rows_lo"]))


def measurement_rows(results: list[BucketResult]) -> list[dict]:
    rows = []
    for result in results:
        scores = result.scores()
        b = result.bucket
        rows.append(
            {
                "dtype": b.dtype,
                "cols_lo": b.cols_lo,
                "cols_hi": b.cols_hi,
                "rows_lo": b.rows_lo,
                "rows_hi": b.rows_hi,
                "passes": b.passes,
                "block_n": b.block_n,
                "default": asdict(b.default),
                "cells": [cell.name for cell in result.cells],
                "candidates": [
                    {**asdict(config), "score": round(scores[config], 4), "us": [round(t, 3) for t in times]}
                    for config, times in sorted(result.times.items(), key=lambda item: (scores[item[0]], item[0]))
                ],
                "invalid": [{**asdict(config), "reason": why} for config, why in sorted(result.invalid.items())],
                "best_any": asdict(result.best_any) if result.best_any else None,
            }
        )
    return rows


def tuning_json(meta: dict, results: list[BucketResult], spec_dtypes: list[str], native_pps: bool) -> str:
    data = {
        **meta,
        "best": best_rows(results, spec_dtypes, native_pps),
        "measurements": measurement_rows(results),
    }
    return compact_numbers(json.dumps(data, sort_keys=True, indent=1)) + "\n"


def compact_numbers(text: str) -> str:
    """Lists of numbers on one line (one candidate's times per line diffs better than one time per line)."""

    def one_line(match: re.Match) -> str:
        return "[" + ", ".join(item.strip() for item in match.group(1).split(",") if item.strip()) + "]"

    return re.sub(r"\[([-+\d.eE,\s]*)\]", one_line, text)


# ----------------------------------------------------------------------------
# Launching a candidate through the generated op


def make_entry(bucket: Bucket, config: Config):
    """A dispatch entry covering every shape, with the candidate's config."""
    from dsl import runtime

    values = {
        "dtype": bucket.dtype,
        "cols_lo": 1,
        "cols_hi": None,
        "rows_lo": 1,
        "rows_hi": None,
        "passes": bucket.passes,
        "block_m": config.block_m,
        "block_n": bucket.block_n,
        "num_warps": config.num_warps,
        "grid": config.grid,
        "multibuffer": False,
        "ub_bytes": 0,
        "programs_per_sm": config.programs_per_sm,
    }
    unknown = [f for f in runtime.Entry._fields if f not in values and f not in runtime.Entry._field_defaults]
    if unknown:
        raise RuntimeError(f"runtime.Entry has fields {unknown} that benchmarks/tune.py make_entry does not fill")
    return runtime.Entry(**{name: values[name] for name in runtime.Entry._fields if name in values})


def tune_launcher_class():
    from dsl import runtime

    class TuneLauncher(runtime.Launcher):
        """The runtime's launcher, counting its decisions and, where the runtime has no such knob,
        widening the persistent grid to programs_per_sm programs per SM."""

        def __init__(self, bucket: Bucket, config: Config, module):
            table = runtime.DispatchTable(OP, "cuda", (make_entry(bucket, config),))
            super().__init__(table, module.KERNELS, "cuda", dict(getattr(module.LAUNCHER, "options", {})))
            self.config, self.decided = config, 0

        def decide(self, mode, dtype, n_rows, n_cols, device_index):
            self.decided += 1
            kernel, grid, options, entry = super().decide(mode, dtype, n_rows, n_cols, device_index)
            pps = self.config.programs_per_sm
            if self.config.grid == "persistent" and pps != 1 and "programs_per_sm" not in entry._fields:
                tiles = math.ceil(n_rows / self.config.block_m)
                grid = (max(1, min(runtime.cuda_sm_count(device_index) * pps, tiles, 65535)),)
            return kernel, grid, options, entry

    return TuneLauncher


def kernel_available(module, bucket: Bucket, config: Config, cell: Cell) -> bool:
    from dsl.runtime import variant_key

    entry = make_entry(bucket, config)
    return variant_key(cell.mode, entry, cell.rows, cell.cols) in module.KERNELS


class Swapped:
    """Temporarily make ``launcher`` the generated module's LAUNCHER."""

    def __init__(self, module, launcher):
        self.module, self.launcher = module, launcher

    def __enter__(self):
        self.saved = self.module.LAUNCHER
        self.module.LAUNCHER = self.launcher
        return self.launcher

    def __exit__(self, *exc):
        self.module.LAUNCHER = self.saved
        return False


# ----------------------------------------------------------------------------
# Compiling ahead, in spawned worker processes


def warm_value(name: str, pointer: torch.Tensor, n_rows: int, n_cols: int):
    """A kernel parameter's value in a compile-ahead call, as the op passes it for contiguous inputs
    (pointers: a 1-element tensor of the input dtype, which Triton specializes like the real ones)."""
    if name == "RSTD_ptr":
        return None
    if name.endswith("_ptr"):
        return pointer
    if name.endswith("_row_stride") or name == "n_cols":
        return n_cols
    if name == "n_rows":
        return n_rows
    if name == "eps":
        return EPS
    if name == "STORE_RSTD":
        return False
    raise KeyError(f"kernel parameter {name!r}: teach benchmarks/tune.py warm_value its value")


def _warm_kernels(jobs: list[tuple]) -> list[str]:
    """Worker: compile, without launching, the kernels a candidate needs, into Triton's on-disk cache.

    The kernel and its options come from the runtime's ``Launcher.decide``; the
    arguments are built by parameter name with the real integers, so the main
    process's first launch finds the compiled kernel in the cache.
    """
    from dsl import runtime

    module = importlib.import_module(MODULE)
    errors = []
    pointers: dict[str, torch.Tensor] = {}
    for bucket, config, cell in jobs:
        try:
            table = runtime.DispatchTable(OP, "cuda", (make_entry(bucket, replace(config, grid="tiles")),))
            launcher = runtime.Launcher(table, module.KERNELS, "cuda", dict(getattr(module.LAUNCHER, "options", {})))
            kernel, grid, options, _ = launcher.decide(cell.mode, bucket.dtype, cell.rows, cell.cols, 0)
            if bucket.dtype not in pointers:
                pointers[bucket.dtype] = torch.empty(1, dtype=timing.DTYPES[bucket.dtype], device="cuda")
            values = {
                name: warm_value(name, pointers[bucket.dtype], cell.rows, cell.cols)
                for name in kernel.arg_names
                if name not in options
            }
            kernel.warmup(grid=grid, **values, **options)
        except Exception as error:
            errors.append(f"{bucket.name} {config.label} {cell.name}: {type(error).__name__}: {error}")
    return errors


class Precompiler:
    """Submits each bucket's compile jobs to a process pool; ``wait(bucket)`` before measuring it."""

    def __init__(self, jobs: int):
        self.pool = None
        self.futures: dict[Bucket, list] = {}
        self.errors = 0
        if jobs > 0:
            try:
                context = multiprocessing.get_context("spawn")
                self.pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context)
            except Exception as error:
                log(f"no compile workers ({error}); compiling in this process")

    def submit(self, module, bucket: Bucket, configs: list[Config], bucket_cells: list[Cell]) -> None:
        if self.pool is None:
            return
        try:
            self.futures[bucket] = [
                self.pool.submit(_warm_kernels, [(bucket, config, cell) for cell in bucket_cells])
                for config in configs
                if all(kernel_available(module, bucket, config, cell) for cell in bucket_cells)
            ]
        except Exception as error:
            log(f"compile workers failed ({error}); compiling in this process")
            self.pool = None

    def wait(self, bucket: Bucket) -> None:
        for future in self.futures.pop(bucket, []):
            try:
                for error in future.result():
                    self.errors += 1
                    if self.errors <= 5:
                        log(f"  precompile: {error}")
                    elif self.errors == 6:
                        log("  precompile: more errors not shown (the main process compiles what is missing)")
            except Exception as error:  # a broken pool: the main process compiles what is missing
                log(f"  precompile worker failed: {type(error).__name__}: {error}")

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


# ----------------------------------------------------------------------------
# Measuring


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class BucketInputs:
    """Input sets (rotated for small shapes) and torch eager's outputs, per shape of a bucket."""

    def __init__(self, bucket: Bucket, bucket_cells: list[Cell], l2: int):
        import torch.nn.functional as F

        self.sets, self.refs, self.calls = {}, {}, {}
        elem = timing.element_bytes(bucket.dtype)
        for cell in bucket_cells:
            shape = (cell.rows, cell.cols)
            if shape not in self.sets:
                call_bytes = timing.bytes_moved("pre", cell.rows, cell.cols, elem)
                n_sets = timing.rotation_sets(call_bytes, l2)
                self.sets[shape] = timing.make_inputs(cell.rows, cell.cols, bucket.dtype, n_sets)
                self.calls[shape] = timing.calls_per_graph(call_bytes)
                x, r, w = self.sets[shape][0]
                s = x + r
                self.refs[shape] = (F.rms_norm(s, (cell.cols,), w, EPS), s)  # y is the same in both modes


def measure_config(module, op, bucket: Bucket, config: Config, cell: Cell, inputs: BucketInputs, reps: int) -> float:
    """Device µs per call of the op with ``config``; raises on a wrong output."""
    launcher = tune_launcher_class()(bucket, config, module)
    sets = inputs.sets[(cell.rows, cell.cols)]
    mode = cell.mode

    def call(x, r, w):
        return op(x, r, w, EPS, norm_pos=mode)

    with Swapped(module, launcher):
        y, res = call(*sets[0])
        if launcher.decided == 0:
            raise RuntimeError(
                f"swapping {MODULE}.LAUNCHER had no effect: the op no longer launches through it; "
                "adapt benchmarks/tune.py (Swapped, TuneLauncher)"
            )
        y_ref, s_ref = inputs.refs[(cell.rows, cell.cols)]
        ok_y, err_y = timing.compare(y, y_ref)
        ok_s, err_s = timing.compare(res, s_ref) if mode == "pre" else (True, 0.0)
        if not (ok_y and ok_s):
            raise ValueError(f"output differs from torch eager (max abs error {max(err_y, err_s):.3g})")
        del y, res
        for inputs_set in sets:
            call(*inputs_set)
        samples = timing.graph_time_us(call, sets, inputs.calls[(cell.rows, cell.cols)], reps, min_ms=0.5)
    return timing.median(samples)


TRACEBACKS = [3]  # how many more unexpected failures get a full traceback in the log


def measure_bucket(module, op, result: BucketResult, configs: list[Config], inputs: BucketInputs, reps: int) -> None:
    for config in configs:
        if config in result.times or config in result.invalid:
            continue
        missing = [c.name for c in result.cells if not kernel_available(module, result.bucket, config, c)]
        if missing:
            result.invalid[config] = f"no generated kernel for {', '.join(missing[:3])}"
            continue
        times = []
        try:
            with torch.no_grad():
                for cell in result.cells:
                    times.append(measure_config(module, op, result.bucket, config, cell, inputs, reps))
            result.times[config] = times
        except Exception as error:
            text = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            result.invalid[config] = text
            log(f"  {result.bucket.name} {config.label}: {text}")
            if not isinstance(error, ValueError) and TRACEBACKS[0] > 0:
                TRACEBACKS[0] -= 1
                log(traceback.format_exc())
        torch.cuda.synchronize()


def environment() -> dict:
    import triton

    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "device": f"{properties.name} ({properties.multi_processor_count} SMs)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "op": OP,
        "method": (
            "per bucket: geometric mean over its representative shapes (pre and post) of each candidate's "
            "CUDA-graph device time over the best candidate's there; planner default kept within 1%"
        ),
    }


def tune(
    spec_dir: Path | None = None,
    out: Path | None = None,
    quick: bool = False,
    dtypes: list[str] | None = None,
    time_limit: float = 450.0,
    jobs: int | None = None,
    reps: int = REPS,
) -> Path:
    """Measure every bucket of the cuda table on this GPU and write the tuning file.

    ``python build.py --tune cuda`` calls this with the spec folder; ``python build.py`` then reads the file.
    """
    from dsl.plan import CUDA_TUNING_FILE

    started = time.perf_counter()
    out = out or CUDA_TUNING_FILE
    if not torch.cuda.is_available():
        raise SystemExit("tune: needs a CUDA GPU")
    spec = load_spec(spec_dir)
    spec_dtypes = [d.value for d in spec.dtypes]
    dtypes = [d for d in (dtypes or (["bf16"] if quick else list(DEFAULT_DTYPES))) if d in spec_dtypes]
    native_pps = runtime_has_pps()
    module = importlib.import_module(MODULE)
    op = getattr(importlib.import_module("generated"), OP)
    sm_count = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    l2 = timing.l2_bytes()
    todo = buckets(spec, dtypes, quick)
    plans = [(b, cells(b, quick), candidates(b, quick)) for b in todo]
    jobs = min(12, max(1, (os.cpu_count() or 4) // 2)) if jobs is None else jobs
    log(
        f"tuning {OP} for {', '.join(dtypes)}: {len(todo)} buckets, "
        f"{sum(len(c) * len(k) for _, k, c in plans)} candidate x shape measurements before stage 2, "
        f"{jobs} compile workers"
    )
    meta = {**environment(), "complete": True}
    precompiler = Precompiler(jobs)
    for bucket, bucket_cells, configs in plans:
        precompiler.submit(module, bucket, configs, bucket_cells)
    results: list[BucketResult] = []
    try:
        for number, (bucket, bucket_cells, configs) in enumerate(plans, 1):
            elapsed = time.perf_counter() - started
            if elapsed > time_limit:
                meta["complete"] = False
                log(f"time limit: {len(plans) - number + 1} buckets not measured (they keep the planner defaults)")
                break
            precompiler.wait(bucket)
            result = BucketResult(bucket, bucket_cells)
            inputs = BucketInputs(bucket, bucket_cells, l2)
            measure_bucket(module, op, result, configs, inputs, reps)
            measure_bucket(module, op, result, stage2(result, sm_count, 1 if quick else STAGE2_TOP), inputs, reps)
            del inputs
            torch.cuda.empty_cache()
            choose(result, native_pps)
            results.append(result)
            scores = result.scores()
            if result.best:
                gain = scores[bucket.default] / scores[result.best] if bucket.default in scores else float("nan")
                note = ""
                if result.best_any and result.best_any != result.best:
                    note = f" (best with programs_per_sm: {result.best_any.label}, score {scores[result.best_any]:.3f})"
                log(
                    f"[{number}/{len(plans)} {elapsed:.0f} s] {bucket.name}: {result.best.label}, "
                    f"{gain:.3f}x the default ({bucket.default.label}){note}"
                )
            else:
                log(f"[{number}/{len(plans)} {elapsed:.0f} s] {bucket.name}: no valid candidate; default kept")
            out.parent.mkdir(parents=True, exist_ok=True)
            # written after every bucket: a killed run keeps what it measured
            out.write_text(tuning_json(meta, results, spec_dtypes, native_pps), encoding="utf-8")
    finally:
        precompiler.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tuning_json(meta, results, spec_dtypes, native_pps), encoding="utf-8")
    log(f"wrote {out} in {time.perf_counter() - started:.0f} s; run `python build.py` to regenerate the cuda tables")
    return out


# ----------------------------------------------------------------------------
# Command line and self-test


def self_test() -> int:
    """CPU only: buckets and candidates from the planner, fake timings, the JSON read back by dsl/plan.py."""
    import tempfile

    from dsl import plan as planner

    spec = load_spec(None)
    all_buckets = buckets(spec, ["bf16", "fp32"])
    expected = len([e for e in planner.cuda_table(spec, {}) if e.dtype.value in ("bf16", "fp32")])
    assert len(all_buckets) == expected and all_buckets[0].dtype == "bf16", (len(all_buckets), expected)
    total_cells, total_candidates = 0, 0
    for bucket in all_buckets:
        bucket_cells = cells(bucket)
        configs = candidates(bucket)
        assert bucket_cells and configs and bucket.default in configs, bucket
        for cell in bucket_cells:
            assert bucket.rows_lo <= cell.rows and (bucket.rows_hi is None or cell.rows <= bucket.rows_hi), cell
            assert bucket.cols_lo <= cell.cols and (bucket.cols_hi is None or cell.cols <= bucket.cols_hi), cell
            assert cell.rows * cell.cols <= MAX_ELEMENTS or cell.rows == bucket.rows_lo, cell
        for config in configs:
            assert 1 <= config.num_warps <= 32 and config.block_m * bucket.block_n <= max(MAX_TILE, bucket.block_n)
        total_cells += len(bucket_cells)
        total_candidates += len(configs) * len(bucket_cells)
    compiles = {
        compile_key(bucket, config, cell)
        for bucket in all_buckets
        for config in candidates(bucket)
        for cell in cells(bucket)
    }
    log(
        f"{len(all_buckets)} buckets (bf16, fp32), {total_cells} shapes, {total_candidates} stage-1 measurements, "
        f"about {len(compiles)} kernels to compile"
    )
    quick = buckets(spec, ["bf16"], quick=True)
    assert {b.cols_hi for b in quick} == set(QUICK_WIDTHS), quick

    # Fake timings: a bandwidth model that prefers more warps for wide rows and BLOCK_M for narrow ones.
    results = []
    for bucket in all_buckets:
        result = BucketResult(bucket, cells(bucket))
        configs = candidates(bucket)
        for config in configs:
            result.times[config] = [
                (1.0 + 0.05 * abs(math.log2(config.num_warps * 256 / bucket.block_n + 1e-9)))
                * (2.0 + cell.rows * cell.cols / (1000.0 * config.block_m**0.1))
                for cell in result.cells
            ]
        for config in stage2(result, 132, STAGE2_TOP):
            result.times[config] = [t * 0.97 for t in result.times[replace(config, grid="tiles", programs_per_sm=1)]]
        if bucket.cols_hi == 64:
            result.invalid[Config(16, 32)] = "ValueError: output differs from torch eager"
        choose(result, native_pps=False)
        assert result.best is not None and result.best.programs_per_sm == 1, result.best
        results.append(result)
    meta = {"device": "Fake H100 (132 SMs)", "date": "2026-01-01 00:00 UTC", "torch": "2.11.0", "triton": "3.6.0"}
    meta |= {"op": OP, "method": "fake", "complete": True}
    text = tuning_json(meta, results, ["fp32", "fp16", "bf16"], native_pps=False)
    assert text == tuning_json(meta, results, ["fp32", "fp16", "bf16"], native_pps=False)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "cuda.json"
        path.write_text(text)
        tuning = planner.load_cuda_tuning(path)
        assert len(tuning) == 3 * len(all_buckets) // 2, len(tuning)  # fp16 copies bf16
        table = planner.cuda_table(spec, tuning)
        assert len(table) == len(planner.cuda_table(spec, {}))
        for entry in table:
            key = (entry.dtype, entry.cols_hi, entry.rows_lo)
            assert (entry.block_m, entry.num_warps, entry.grid) == tuning[key], (key, entry)
    data = json.loads(text)
    assert {"device", "date", "torch", "triton", "best", "measurements"} <= set(data)

    # The compile-ahead arguments cover every parameter of the generated kernels.
    module = importlib.import_module(MODULE)
    pointer = torch.empty(1)
    for kernel in module.KERNELS.values():
        for name in kernel.arg_names:
            if name not in ("BLOCK_M", "BLOCK_N"):
                warm_value(name, pointer, 8, 4096)
    bucket = all_buckets[0]
    assert kernel_available(module, bucket, bucket.default, cells(bucket)[0])
    log(f"self-test passed: {len(data['best'])} best rows, {len(data['measurements'])} buckets measured (fake)")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tune", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument("--out", type=Path, help="the tuning file to write (default dsl/tuning/cuda.json)")
    parser.add_argument("--specs", type=Path, help="folder of *.norm specs (default dsl/specs)")
    parser.add_argument("--quick", action="store_true", help="bf16, four widths, fewer shapes: a smoke run")
    parser.add_argument(
        "--dtypes", help=f"dtypes to measure (default {','.join(DEFAULT_DTYPES)}; fp16 copies bf16 unless named)"
    )
    parser.add_argument(
        "--time-limit", type=float, default=450.0, help="seconds after which no new bucket is started (default 450)"
    )
    parser.add_argument(
        "--jobs", type=int, help="compile worker processes (default: half the cores, at most 12; 0: none)"
    )
    parser.add_argument("--reps", type=int, default=REPS, help=f"timed repeats per measurement (default {REPS})")
    parser.add_argument("--self-test", action="store_true", help="no GPU: check buckets, candidates and the JSON")
    args = parser.parse_args(argv)
    if args.dtypes:
        args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        unknown = [d for d in args.dtypes if d not in timing.DTYPES]
        if unknown:
            parser.error(f"unknown dtypes {', '.join(unknown)}; allowed: {', '.join(timing.DTYPES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.self_test:
        return self_test()
    tune(args.specs, args.out, args.quick, args.dtypes, args.time_limit, args.jobs, args.reps)
    return 0


if __name__ == "__main__":
    # Run through the importable module, so the compile workers unpickle benchmarks.tune's names.
    from benchmarks import tune as _this

    sys.exit(_this.main())
