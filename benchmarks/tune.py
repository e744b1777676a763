"""Measure launch configs for each op's cuda dispatch table; write dsl/tuning/cuda.json.

    python build.py --tune cuda                 every shipped op with a cuda target
    python -m benchmarks.tune [--ops add_rmsnorm,layernorm] [--out PATH] [--quick]
                              [--dtypes bf16,fp32] [--widths 8192] [--rows 4096] [--time-limit S] [--reps N]
    python -m benchmarks.tune --self-test       CPU: the whole path, kernels in Triton's interpreter

The buckets are the cuda table's own (``dsl/targets/cuda.py``: a width bucket per
power of two up to the single-pass limit, one multi-pass bucket, times its row
buckets). Per op, dtype and bucket the candidates are rows per program (BLOCK_M)
x warps on the one-tile-per-program grid (from MULTI_FROM columns also the
multi-pass kernel, a row per program in column blocks of a quarter, half or all the
bucket's width), then the best two on the persistent grid (one program per SM,
what the runtime launches). Each candidate runs the
op's generated kernels through a ``runtime.Launcher`` of its own with a
one-entry table; the arguments are built from the kernels' ABI
(``generated.<op>_cuda.ABI``), and every output is checked against the op's
generated PyTorch reference. Device time from CUDA-graph replay
(benchmarks/timing.py), the inputs rotated as bench.py rotates them, on representative shapes of the bucket, in every
residual mode of the op. Score: geometric mean over those shapes of time / the
best time there; the planner's default is kept within 1 %.

A candidate that raises or computes a wrong output stops the run with that error
(the op being measured is not written); only a config that does not fit the GPU
(Triton's OutOfResources) is skipped, and logged. The file keeps one section
per op, written when the op is done; a run replaces the buckets it measured
and keeps the others (each kept row with the date it was measured); ops without
a section use the file's ``fallback`` op's configs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from benchmarks import timing
from benchmarks.calls import call_bytes, check, launcher_for, make_call
from benchmarks.tuning_file import merged, section, tuning_text
from dsl.model import DType

ROW_SAMPLES = (1, 64, 512, 1024, 8192, 65536)
MULTI_FROM = 4096  # single-pass buckets this wide also try the multi-pass kernel
QUICK_ROW_SAMPLES = (1, 512, 4096)
QUICK_WIDTHS = (128, 1024, 4096, 8192)
MAX_ELEMENTS = 64 * 2**20  # per tensor
MAX_TILE = 16384  # BLOCK_M * BLOCK_N elements, beyond one row
MAX_PER_THREAD = 64  # tile elements one thread holds, at most
KEEP_DEFAULT_WITHIN = 1.01
DEFAULT_DTYPES = ("bf16", "fp32")


@dataclass(frozen=True, order=True)
class Config:
    block_m: int
    num_warps: int
    grid: str = "tiles"  # tiles or persistent
    passes: str = ""  # the bucket's (""), or "multi" in a single-pass bucket
    block_n: int = 0  # the bucket's (0), or the multi-pass kernel's column block

    def layout(self, bucket: Bucket) -> tuple[str, int]:
        """The kernel (pass) and BLOCK_N this config launches in ``bucket``."""
        return self.passes or bucket.passes, self.block_n or bucket.block_n


@dataclass(frozen=True)
class Bucket:
    dtype: str
    cols_lo: int
    cols_hi: int | None
    rows_lo: int
    rows_hi: int | None
    passes: str
    block_n: int
    default: Config

    @property
    def name(self) -> str:
        return f"{self.dtype} cols {self.cols_lo}..{self.cols_hi or ''} rows {self.rows_lo}..{self.rows_hi or ''}"


@dataclass
class Result:
    bucket: Bucket
    cells: list[tuple[str, int, int]]  # (mode, rows, cols)
    times: dict[Config, list[float]] = field(default_factory=dict)
    skipped: dict[Config, str] = field(default_factory=dict)
    best: Config | None = None

    def scores(self) -> dict[Config, float]:
        floor = [min(t[i] for t in self.times.values()) for i in range(len(self.cells))]
        return {
            c: math.exp(sum(math.log(t / f) for t, f in zip(ts, floor, strict=True)) / len(floor))
            for c, ts in self.times.items()
        }


# ----------------------------------------------------------------------------
# What to measure (pure Python)


def buckets(spec, dtypes: list[str], quick: bool, widths: list[int] | None = None, rows: list[int] | None = None
            ) -> list[Bucket]:  # fmt: skip
    """The op's buckets to measure: QUICK_WIDTHS when quick, else every one; only those whose width
    range holds one of ``widths`` and whose row range one of ``rows``, when given."""
    from dsl.targets import cuda

    result = []
    for dtype in [d for d in spec.dtypes if d.value in dtypes]:
        for cols_lo, cols_hi, passes, block_n in cuda.buckets():
            if quick and cols_hi not in QUICK_WIDTHS:
                continue
            if widths and not any(cols_lo <= w and (cols_hi is None or w <= cols_hi) for w in widths):
                continue
            for rows_lo, rows_hi in cuda.ROW_BUCKETS:
                if rows and not any(rows_lo <= r and (rows_hi is None or r <= rows_hi) for r in rows):
                    continue
                block_m, warps, grid = cuda.default_config(dtype, block_n, rows_lo)
                default = Config(block_m, warps, grid.value)
                result.append(Bucket(dtype.value, cols_lo, cols_hi, rows_lo, rows_hi, passes.value, block_n, default))
    return result


def cells(bucket: Bucket, modes: list[str], quick: bool) -> list[tuple[str, int, int]]:
    """Its upper width (no column mask) and, from 1024 columns, a ragged one; rows in its range."""
    if bucket.cols_hi is None:
        widths = [2 * (bucket.cols_lo - 1), (bucket.cols_lo - 1) * 5 // 4 + 64]
    else:
        ragged = (3 * bucket.cols_hi // 4) // 16 * 16
        widths = [bucket.cols_hi] + ([ragged] if bucket.cols_hi >= 1024 and ragged >= bucket.cols_lo else [])
    widths = widths[:1] if quick else widths
    samples = QUICK_ROW_SAMPLES if quick else ROW_SAMPLES
    result = []
    for width in widths:
        rows = [r for r in samples if bucket.rows_lo <= r and (bucket.rows_hi is None or r <= bucket.rows_hi)]
        rows = [r for r in rows or [bucket.rows_lo] if r * width <= MAX_ELEMENTS] or [bucket.rows_lo]
        result += [(mode, r, width) for r in rows for mode in modes]
    return result


def candidates(bucket: Bucket) -> list[Config]:
    """Rows per program x warps on the tile grid: at most MAX_PER_THREAD elements per thread,
    at least one 16-byte vector per thread."""
    per_vector = max(1, 16 // timing.element_bytes(bucket.dtype))
    result = {bucket.default}
    for block_m in (1, 2, 4, 8, 16) if bucket.passes == "single" else (1, 2, 4):
        elements = block_m * bucket.block_n
        if block_m > 1 and elements > MAX_TILE:
            continue
        low = max(1, elements // (32 * MAX_PER_THREAD))
        warps = low
        while warps <= max(low, min(32, elements // (32 * per_vector))):
            result.add(Config(block_m, warps))
            warps *= 2
    if bucket.passes == "single" and bucket.cols_hi >= MULTI_FROM:  # a row per program, in column blocks
        # a quarter of the bucket's width divides its ragged width (3/4 of it) too: no masked block there
        for block_n in (bucket.block_n // 4, bucket.block_n // 2, bucket.block_n):
            result |= {Config(1, warps, "tiles", "multi", block_n) for warps in ((4, 8) if block_n < 4096 else (8, 16))}
    return sorted(result)


def persistent(result: Result, top: int = 2) -> list[Config]:
    scores = result.scores()
    ranked = sorted((c for c in scores if c.grid == "tiles"), key=lambda c: scores[c])[:top]
    return [replace(c, grid="persistent") for c in ranked]


def choose(result: Result) -> None:
    scores = result.scores()
    best = min(scores, key=lambda c: (scores[c], c))
    near = [c for c in scores if scores[c] <= scores[best] * KEEP_DEFAULT_WITHIN]
    result.best = result.bucket.default if result.bucket.default in near else best


def candidate_launcher(op: str, bucket: Bucket, config: Config):
    """A launcher of the op's kernels whose one table entry is this candidate in this bucket."""
    passes, block_n = config.layout(bucket)
    return launcher_for(op, bucket.dtype, passes, config.block_m, block_n, config.num_warps, config.grid)


_ROTATION: dict[tuple, list[dict]] = {}  # (op, bucket, cell) -> its rotation's calls: one bucket's at a time


def rotation_calls(op: str, bucket: Bucket, cell, moved: int) -> list[dict]:
    """The calls a candidate's graph cycles through besides the checked one: as many input sets as
    bench.py rotates (``timing.rotation_sets``: until their bytes exceed four L2 caches), so that a
    small shape reads its inputs from memory here as it does there. Made once per shape and shared
    by the bucket's candidates (they take the same arguments); the previous bucket's are dropped."""
    key = (op, bucket, cell)
    if key not in _ROTATION:
        if any(k[:2] != key[:2] for k in _ROTATION):
            _ROTATION.clear()
        mode, rows, cols = cell
        sets = timing.rotation_sets(moved, timing.l2_bytes())
        _ROTATION[key] = [make_call(op, mode, rows, cols, bucket.dtype, "cuda", seed) for seed in range(1, sets)]
    return _ROTATION[key]


def measure(op, spec, bucket: Bucket, config: Config, cell, reps: int, timed: bool = True) -> float:
    """Device µs per launch of a candidate on one shape (checked first); OutOfResources propagates."""
    mode, rows, cols = cell
    device = "cuda" if timed else "cpu"
    launch = candidate_launcher(op, bucket, config)
    call = make_call(op, mode, rows, cols, bucket.dtype, device)
    launch(call["key"], False, 0, call["args"])
    check(op, spec, call, mode)
    if not timed:
        return 0.0
    moved = call_bytes(call, mode)
    sets = [(call,)] + [(c,) for c in rotation_calls(op, bucket, cell, moved)]

    def run(c):
        launch(c["key"], False, 0, c["args"])

    return timing.median(timing.graph_time_us(run, sets, timing.calls_per_graph(moved), reps, min_ms=0.5))


def compile_ahead(jobs: list[tuple]) -> list[str]:
    """Worker process: compile (kernel.warmup, into Triton's on-disk cache) what measure() will launch."""
    errors = []
    for op, bucket, config, (mode, rows, cols) in jobs:
        try:
            launch = candidate_launcher(op, bucket, config)
            call = make_call(op, mode, rows, cols, bucket.dtype, "cuda")
            kernel, grid, options, _ = launch.decide(bucket.dtype, rows, cols, 0)
            kernel.warmup(*call["args"], grid=grid, **options)
        except Exception as error:  # the main process compiles it again, and fails loudly there
            errors.append(f"{op} {bucket.name} {config} {mode} {rows}x{cols}: {type(error).__name__}: {error}")
    return errors


def measure_bucket(op, spec, result: Result, configs: list[Config], reps: int, timed: bool = True) -> None:
    from triton.runtime.errors import OutOfResources

    for config in configs:
        if config in result.times or config in result.skipped:
            continue
        try:
            result.times[config] = [measure(op, spec, result.bucket, config, c, reps, timed) for c in result.cells]
        except OutOfResources as error:  # does not fit this GPU: not a candidate
            result.skipped[config] = str(error).splitlines()[0]
            print(f"  {op} {result.bucket.name} {config}: skipped ({result.skipped[config]})", file=sys.stderr)


# ----------------------------------------------------------------------------
# Running


def tune(spec_dir=None, out=None, ops=None, quick=False, dtypes=None, time_limit=3600.0, reps=5, jobs=0,
         widths=None, rows=None) -> Path:  # fmt: skip
    """Measure the buckets of each op's cuda table on this GPU (every one, or those holding ``widths``
    and ``rows``); write the tuning file after each op, replacing the buckets measured.

    No op is started after ``time_limit`` seconds; ops not measured keep their sections (or the fallback).
    """
    import triton

    from dsl import pipeline
    from dsl.model import Target
    from dsl.targets import cuda

    out = out or cuda.TUNING_FILE
    specs = [s for s in pipeline.load_specs(spec_dir or pipeline.SPECS) if Target.CUDA in s.targets]
    unknown = sorted(set(ops or ()) - {s.name for s in specs})
    if unknown:
        raise SystemExit(f"tune: no op with a cuda target in the specs is named {', '.join(unknown)}")
    specs = [s for s in specs if ops is None or s.name in ops]
    dtypes = dtypes or (["bf16"] if quick else list(DEFAULT_DTYPES))
    # an op the selection leaves nothing to measure is skipped, not stamped as re-tuned (date, device)
    empty = [s.name for s in specs if not buckets(s, dtypes, quick, widths, rows)]
    given = [("dtypes", dtypes), ("widths", widths), ("rows", rows)]
    chosen = ", ".join(f"{name} {','.join(map(str, values))}" for name, values in given if values)
    chosen += f" (--quick: widths {','.join(map(str, QUICK_WIDTHS))})" if quick else ""
    if empty and len(empty) == len(specs):
        raise SystemExit(f"tune: {chosen} leave nothing to measure ({', '.join(empty)})")
    for name in empty:
        print(f"tune: {chosen} leave {name} nothing to measure (its dtypes: see its spec); skipped", file=sys.stderr)
    specs = [s for s in specs if s.name not in empty]
    if not torch.cuda.is_available():
        raise SystemExit("tune: needs a CUDA GPU (try --self-test)")
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    meta = {
        "device": f"{properties.name} ({properties.multi_processor_count} SMs)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "method": "geometric mean over a bucket's shapes and modes of CUDA-graph device time / the best there "
        "(inputs rotated as in bench.py); the planner's default kept within 1%",
        "complete": not quick and not widths and not rows,
    }
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    jobs = jobs or min(12, max(1, (os.cpu_count() or 4) // 2))
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        for number, spec in enumerate(specs):
            if time.perf_counter() - started > time_limit:
                print(f"time limit: not measured: {', '.join(s.name for s in specs[number:])}", file=sys.stderr)
                break
            modes = [m.value for m in spec.residual] or ["none"]
            todo = buckets(spec, dtypes, quick, widths, rows)
            # stage one's kernels compile in workers while the main process measures
            jobs_of = lambda b: [(spec.name, b, c, x) for c in candidates(b) for x in cells(b, modes, quick)]  # noqa: B023
            ahead = [pool.submit(compile_ahead, jobs_of(b)) for b in todo]
            results = []
            for bucket, future in zip(todo, ahead, strict=True):
                for error in future.result()[:3]:
                    print(f"  compile ahead: {error}", file=sys.stderr)
                result = Result(bucket, cells(bucket, modes, quick))
                measure_bucket(spec.name, spec, result, candidates(bucket), reps)
                measure_bucket(spec.name, spec, result, persistent(result), reps)
                choose(result)
                results.append(result)
                print(f"{spec.name} {bucket.name}: {result.best} (default {bucket.default})", file=sys.stderr)
            dtype_names = [d.value for d in spec.dtypes]
            text = tuning_text(merged(out, {spec.name: section({**meta, "op": spec.name}, results, dtype_names)}))
            out.write_text(text, encoding="utf-8")
            print(f"wrote {spec.name}'s section of {out} after {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print("run `python build.py` to regenerate the cuda tables", file=sys.stderr)
    return out


def counts(parser, name: str, text: str | None) -> list[int] | None:
    """--widths or --rows: positive whole numbers, comma-separated."""
    if text is None:
        return None
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        parser.error(f"--{name} {text!r}: give positive whole numbers separated by commas, e.g. 4096,8192")
    if any(v < 1 for v in values):
        parser.error(f"--{name} {text!r}: every value must be 1 or more")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--ops", help="comma-separated op names (default: every shipped op with a cuda target)")
    parser.add_argument("--out", type=Path, help="the tuning file (default dsl/tuning/cuda.json)")
    parser.add_argument("--specs", type=Path, help="folder of *.norm specs (default dsl/specs)")
    parser.add_argument("--quick", action="store_true", help="bf16, four widths, fewer shapes: a smoke run")
    parser.add_argument("--dtypes", help=f"dtypes to measure (default {','.join(DEFAULT_DTYPES)})")
    parser.add_argument("--widths", help="comma-separated widths: measure only the buckets holding them")
    parser.add_argument("--rows", help="comma-separated row counts: measure only the row buckets holding them")
    parser.add_argument("--time-limit", type=float, default=3600.0, help="seconds after which no op is started")
    parser.add_argument("--reps", type=int, default=5, help="timed repeats per measurement")
    parser.add_argument("--jobs", type=int, default=0, help="compile workers (default: half the cores, at most 12)")
    parser.add_argument("--self-test", action="store_true", help="no GPU: the whole path in the interpreter")
    args = parser.parse_args(argv)
    if args.self_test:
        from benchmarks.tune_selftest import self_test

        return self_test()
    ops = args.ops.split(",") if args.ops else None
    dtypes = args.dtypes.split(",") if args.dtypes else None
    if dtypes and (unknown := [d for d in dtypes if d not in {t.value for t in DType}]):
        parser.error(f"--dtypes: unknown {', '.join(unknown)} (the dtypes are {', '.join(t.value for t in DType)})")
    widths, rows = (counts(parser, name, getattr(args, name)) for name in ("widths", "rows"))
    tune(args.specs, args.out, ops, args.quick, dtypes, args.time_limit, args.reps, args.jobs, widths, rows)
    return 0


if __name__ == "__main__":
    from benchmarks import tune as _this  # the compile workers unpickle benchmarks.tune's names

    sys.exit(_this.main())
