"""normgen's ops against their peers, in one process, on the same inputs.

    python -m benchmarks.bench [--quick] [--out DIR] [--ops add_rmsnorm,layernorm] [--shapes family,seed,llm]
                               [--modes pre,post] [--peers torch,compile,liger] [--reps N] [--time-limit S]
    python -m benchmarks.bench --self-test [--out DIR]   # CPU: the ops in the interpreter, the writers

Measures, for every shipped op (or --ops; see benchmarks/README.md and timing.py for the method):

* device time per call from CUDA-graph replay, GB/s of the bytes the op must
  move and that as a fraction of the device-to-device copy bandwidth measured
  in the same run; medians of repeated runs;
* host time per eager call of add_rmsnorm at bf16 (8, 4096), every impl timed in turns;
* each impl's outputs against the op's generated reference before it is timed.

Writes DIR/bench.md (a summary and targets per op, one table per op), DIR/bench.json
(every median and sample), DIR/bench_bf16_pre.png and DIR/bench_bf16_post.png
(add_rmsnorm), and prints the markdown last. The run stops starting new shapes
after --time-limit seconds and still writes what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import sys
import time
import traceback
from pathlib import Path

import torch

from benchmarks import ops, timing
from benchmarks.ops import MAKERS, OPS
from benchmarks.report import (
    HOST_SHAPE,
    LABELS,
    SEED_SHAPES,
    Case,
    DeviceRow,
    HostRow,
    big,
    fmt_us,
    log,
    write_outputs,
)

FAMILY_ROWS = (16384, 4096, 64, 1)
FAMILY_HIDDEN = (4096, 8192)
FAMILY_EXTRA = ((2048, 8192),)  # 16M elements exactly: the smallest shape the bandwidth target covers
QUICK_FAMILY = ((4096, 4096), (64, 8192))
LLM_ROWS = (1, 8, 64, 512, 4096, 16384, 32768)
LLM_HIDDEN = (2048, 4096, 5120, 7168, 7338, 8192)
QUICK_SEED_SHAPES = ((32, 2048), (1024, 1024))
QUICK_LLM_ROWS = (8, 4096)
QUICK_LLM_HIDDEN = (4096, 7338)

GROUPS = ("family", "seed", "llm")
PEERS = ("torch", "compile", "liger")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
DEVICE = "cuda"  # the self-test measures on "cpu" with fake timings


# ----------------------------------------------------------------------------
# What is measured


def group_shapes(group: str, quick: bool) -> list[tuple[str, int, int]]:
    """(dtype, rows, cols) of a shape group: family (bf16, every op), seed (fp32), llm (bf16, 42 shapes)."""
    if group == "family":
        shapes = QUICK_FAMILY if quick else [(r, c) for r in FAMILY_ROWS for c in FAMILY_HIDDEN] + list(FAMILY_EXTRA)
        return [("bf16", rows, cols) for rows, cols in shapes]
    if group == "seed":
        return [("fp32", rows, cols) for rows, cols in (QUICK_SEED_SHAPES if quick else SEED_SHAPES)]
    if group == "llm":
        rows_list = QUICK_LLM_ROWS if quick else LLM_ROWS
        return [("bf16", rows, cols) for rows in rows_list for cols in (QUICK_LLM_HIDDEN if quick else LLM_HIDDEN)]
    raise ValueError(f"unknown shape group {group!r}; the groups are {', '.join(GROUPS)}")


def cases(op_names: list[str], groups: list[str], modes: list[str], quick: bool) -> list[Case]:
    """Every (op, shape, mode) to measure, in measuring order: the largest shapes of every op first
    (they carry the bandwidth target), the seed group last; a time limit drops the smallest."""
    result = {
        Case(op, group, dtype, rows, cols, mode): None
        for group in groups
        for dtype, rows, cols in group_shapes(group, quick)
        for op in op_names
        for mode in ops.modes_of(op, modes)
    }
    order = {op: i for i, op in enumerate(OPS)}
    return sorted(result, key=lambda c: (c.group == "seed", -c.elements, c.cols, order[c.op], c.mode))


def availability(impls: list[str]) -> dict[str, str]:
    """impl -> "" when importable, else why not (a missing peer is reported, never fatal)."""
    result = {}
    for impl in impls:
        try:
            if impl == "normgen":
                import generated  # noqa: F401
            elif impl == "liger":
                import liger_kernel.ops  # noqa: F401
            result[impl] = ""
        except ImportError as error:
            result[impl] = f"n/a: {error}"
    return result


def versions() -> dict[str, str]:
    import triton

    result = {"python": sys.version.split()[0], "torch": torch.__version__, "triton": triton.__version__}
    try:
        result["liger-kernel"] = importlib.metadata.version("liger-kernel")
    except importlib.metadata.PackageNotFoundError:
        result["liger-kernel"] = "not installed"
    return result


# ----------------------------------------------------------------------------
# Measuring


def short_error(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text.splitlines()[0][:300]


def measure_case(case: Case, impls: list[str], missing: dict, reps: int, copy_gbps: float, l2: int) -> list[DeviceRow]:
    """Every impl that has the op, on one (op, shape, mode): outputs checked, then timed."""
    elem = timing.element_bytes(case.dtype)
    call_bytes = ops.bytes_moved(case.op, case.mode, case.rows, case.cols, elem)
    n_sets = timing.rotation_sets(call_bytes, l2)
    calls = timing.calls_per_graph(call_bytes)
    sets = ops.make_inputs(case.op, case.rows, case.cols, case.dtype, n_sets, device=DEVICE)
    rows = []
    with torch.no_grad():
        want = ops.reference(case.op, case.mode, sets[0])
        for impl in (impl for impl in impls if ops.has_impl(case.op, impl)):
            row = DeviceRow(*(case.op, case.group, case.dtype, case.rows, case.cols, case.mode, impl, call_bytes))
            row.calls, row.sets = calls, n_sets
            rows.append(row)
            if missing.get(impl):
                row.error = missing[impl]
                continue
            fn = None
            try:
                fn = MAKERS[impl](case.op, case.mode)
                t0 = time.perf_counter()
                got = fn(*sets[0])
                synchronize()
                row.compile_s = time.perf_counter() - t0
                row.ok, row.max_err = ops.check(case.op, case.mode, got, want)
                del got
                for inputs in sets:  # every set once outside the graph: nothing compiles inside it
                    fn(*inputs)
                row.samples = timing.graph_time_us(fn, sets, calls, reps)
                row.us = timing.median(row.samples)
                row.gbps = call_bytes / (row.us * 1e-6) / 1e9
                row.frac = row.gbps / copy_gbps
            except Exception as error:  # one impl failing must not end the run
                row.error = short_error(error)
                log(f"  {impl} failed on {case}:\n" + traceback.format_exc())
            finally:
                fn = None
                synchronize()
    del sets, want
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return rows


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def host_callables(impls: list[str], missing: dict, mode: str, inputs: tuple) -> list[tuple]:
    """(impl, fn, args, kwargs, error) for each host-time column of add_rmsnorm."""
    result = []
    for impl in impls:
        if missing.get(impl):
            result.append((impl, None, (), {}, missing[impl]))
            continue
        try:
            result.append((impl, MAKERS[impl]("add_rmsnorm", mode), inputs, {}, None))
        except Exception as error:
            log(f"  host-time setup of {impl} ({mode}) failed:\n" + traceback.format_exc())
            result.append((impl, None, (), {}, short_error(error)))
    return result


def measure_host(impls: list[str], missing: dict, modes: list[str], quick: bool) -> list[HostRow]:
    """Host time per eager call of add_rmsnorm at HOST_SHAPE, for each impl.

    The impls are timed in turns (one batch of calls each, then the next impl, for
    every repeat), so that drift in the host's speed reaches them all alike.
    """
    dtype, n_rows, n_cols = HOST_SHAPE
    calls, reps = (500, 5) if quick else (2000, 9)
    inputs = ops.make_inputs("add_rmsnorm", n_rows, n_cols, dtype, 1)[0]
    result = []
    with torch.no_grad():
        for mode in modes:
            timed = []
            for impl, fn, args, kwargs, error in host_callables(impls, missing, mode, inputs):
                row = HostRow(impl, mode, dtype, n_rows, n_cols, error=error)
                result.append(row)
                if fn is not None:
                    row.samples = []
                    timed.append((row, fn, args, kwargs))
            for _ in range(reps):
                for row, fn, args, kwargs in timed:
                    if row.error:
                        continue
                    try:
                        row.samples += timing.host_time_us(fn, args, kwargs, calls=calls, reps=1, warmup=50)
                    except Exception as error:
                        row.error = short_error(error)
                        log(f"  host time of {row.impl} ({mode}) failed:\n" + traceback.format_exc())
                    torch.cuda.synchronize()
            for row, *_ in timed:
                row.us = timing.median(row.samples) if row.samples and not row.error else None
    return result


# ----------------------------------------------------------------------------
# Command line


def split_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if items == ["none"]:
        return []
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a handful of shapes, for a smoke run")
    add("--out", type=Path, help="folder for bench.md, bench.json and the plots (default benchmarks/results)")
    add("--ops", default=",".join(OPS), type=lambda t: split_list(t, tuple(OPS), "op"),
        help="ops to measure (default: every shipped op)")  # fmt: skip
    add("--shapes", default="family", type=lambda t: split_list(t, GROUPS, "shape group"),
        help="shape groups: family (bf16 rows 1, 64, 4096, 16384 x hidden 4096, 8192, and 2048 x 8192), "
        "seed (the seed PR's fp32 table), llm (add_rmsnorm's 42 bf16 shapes); default family")  # fmt: skip
    add("--modes", default="pre,post", type=lambda t: split_list(t, ("pre", "post"), "mode"), help="default pre,post")
    add("--peers", default=",".join(PEERS), type=lambda t: split_list(t, PEERS, "peer"),
        help=f"peers besides normgen, or none (default {','.join(PEERS)})")  # fmt: skip
    add("--reps", type=int, default=10, help="timed repeats per measurement (median reported)")
    add("--time-limit", type=float, default=420.0, help="seconds after which no new case is started (default 420)")
    add("--self-test", action="store_true", help="CPU: every op and its peers, the writers")
    args = parser.parse_args(argv)
    if args.reps < 1 or not args.modes or not args.ops or not args.shapes:
        parser.error("--reps must be at least 1, and --modes, --ops and --shapes name one at least")
    return args


def environment(args: argparse.Namespace) -> dict:
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    l2 = timing.l2_bytes()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "device": f"{properties.name} ({properties.multi_processor_count} SMs, "
        f"{properties.total_memory / 2**30:.0f} GiB, L2 {l2 / 2**20:.0f} MiB)",
        "versions": versions(),
        "l2_mib": l2 / 2**20,
        "ops": args.ops,
        "groups": args.shapes,
        "modes": args.modes,
        "peers": args.peers,
        "reps": args.reps,
        "quick": args.quick,
        "time_limit_s": args.time_limit,
        "complete": True,
    }


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # µ and × must not end a run under an ASCII locale
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    args = parse_args(argv)
    if args.self_test:
        os.environ["TRITON_INTERPRET"] = "1"  # normgen's kernels on CPU tensors, before generated is imported
        return self_test(args.out)
    if not torch.cuda.is_available():
        print("benchmarks.bench needs a CUDA GPU (try --self-test)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    args.out = args.out or DEFAULT_OUT
    impls = ["normgen", *args.peers]
    missing = availability(impls)
    for impl, why in missing.items():
        if why:
            log(f"{LABELS[impl]}: {why}")
    meta = environment(args)
    log(f"{meta['device']}; {meta['versions']}")
    copy = timing.copy_bandwidth()
    log(f"copy bandwidth {copy['gbps']:.0f} GB/s")
    host = measure_host(impls, missing, args.modes, args.quick) if "add_rmsnorm" in args.ops else []
    for row in host:
        log(f"host {row.mode} {LABELS[row.impl]}: {fmt_us(row.us) or row.error} µs")
    todo = cases(args.ops, args.shapes, args.modes, args.quick)
    device: list[DeviceRow] = []
    l2 = int(meta["l2_mib"] * 2**20)
    for number, case in enumerate(todo, 1):
        elapsed = time.perf_counter() - started
        if elapsed > args.time_limit:
            meta["complete"] = False
            log(f"time limit: {len(todo) - number + 1} of {len(todo)} cases not measured")
            break
        rows = measure_case(case, impls, missing, args.reps, copy["gbps"], l2)
        device += rows
        summary = ", ".join(f"{LABELS[r.impl]} {fmt_us(r.us) or 'n/a/err'}{' ✗' * (r.ok is False)}" for r in rows)
        shape = f"{case.op} {case.dtype} {case.mode} {case.rows}×{case.cols}"
        log(f"[{number}/{len(todo)} {elapsed:.0f} s] {shape}: {summary}")
        if number % 20 == 0:  # partial results survive a killed run
            write_outputs(args.out, meta, copy, device, host, impls, plots=False)
    # the copy's own rate at each size the bandwidth target judges (shared by the ops that move as much)
    sizes = sorted({row.bytes for row in device if big(row.case)})
    copy["same_bytes"] = {str(size): timing.same_bytes_copy_gbps(size, l2, args.reps) for size in sizes}
    for size, gbps in copy["same_bytes"].items():
        log(f"copy of {int(size) / 2**20:.0f} MiB: {gbps:.0f} GB/s, {100 * gbps / copy['gbps']:.1f}% of the 1 GiB copy")
    text = write_outputs(args.out, meta, copy, device, host, impls, plots=True)
    log(f"wrote {args.out}/bench.md, bench.json and the plots in {time.perf_counter() - started:.0f} s")
    print(text)
    return 0


def self_test(out: Path | None) -> int:
    from benchmarks.bench_selftest import run

    return run(out)


if __name__ == "__main__":
    sys.exit(main())
