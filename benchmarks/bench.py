"""normgen's add_rmsnorm against its peers, in one process, on the same inputs.

    python -m benchmarks.bench [--quick] [--out DIR] [--shapes seed,llm] [--modes pre,post]
                               [--peers torch,compile,liger] [--reps N] [--time-limit S]
    python -m benchmarks.bench --self-test [--out DIR]   # CPU: the op in the interpreter, the writers

Measures (see benchmarks/README.md and timing.py for the method):

* device time per call from CUDA-graph replay, GB/s of the bytes the op must
  move and that as a fraction of the device-to-device copy bandwidth measured
  in the same run; medians of repeated runs;
* host time per eager call at bf16 (8, 4096), every impl timed in turns;
* each impl's output against torch eager before it is timed.

Writes DIR/bench.md, DIR/bench.json (every median and sample), DIR/bench_bf16_pre.png
and DIR/bench_bf16_post.png, and prints the markdown last. The run stops starting
new shapes after --time-limit seconds and still writes what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks import timing
from benchmarks.report import (
    HOST_SHAPE,
    LABELS,
    SEED_SHAPES,
    Case,
    DeviceRow,
    HostRow,
    fake_results,
    fmt_us,
    log,
    write_outputs,
)

EPS = 1e-6
LLM_ROWS = (1, 8, 64, 512, 4096, 16384, 32768)
LLM_HIDDEN = (2048, 4096, 5120, 7168, 7338, 8192)
QUICK_SEED_SHAPES = ((32, 2048), (1024, 1024))
QUICK_LLM_ROWS = (8, 4096)
QUICK_LLM_HIDDEN = (4096, 7338)

PEERS = ("torch", "compile", "liger")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------
# What is measured


def cases(groups: list[str], modes: list[str], quick: bool) -> list[Case]:
    """Every (shape, mode) to measure, in measuring order: the large llm shapes first (they carry the targets)."""
    result = []
    for group in groups:
        if group == "seed":
            shapes = [("fp32", rows, cols) for rows, cols in (QUICK_SEED_SHAPES if quick else SEED_SHAPES)]
        elif group == "llm":
            rows_list = QUICK_LLM_ROWS if quick else LLM_ROWS
            hidden_list = QUICK_LLM_HIDDEN if quick else LLM_HIDDEN
            shapes = [("bf16", rows, cols) for rows in sorted(rows_list, reverse=True) for cols in hidden_list]
        else:
            raise ValueError(f"unknown shape group {group!r}; the groups are seed, llm")
        result += [Case(group, dtype, rows, cols, mode) for dtype, rows, cols in shapes for mode in modes]
    return sorted(result, key=lambda c: (c.group != "llm", -c.rows, c.cols, c.mode))


# ----------------------------------------------------------------------------
# The impls: each maker returns fn(x, r, w) -> (y, residual_out)


def torch_function(mode: str, n_cols: int, eps: float) -> Callable:
    """Eager PyTorch, two ops: x + r, then F.rms_norm."""
    if mode == "pre":

        def add_rmsnorm_pre(x, r, w):
            s = x + r
            return F.rms_norm(s, (n_cols,), w, eps), s

        return add_rmsnorm_pre

    def add_rmsnorm_post(x, r, w):
        y = F.rms_norm(x + r, (n_cols,), w, eps)
        return y, y

    return add_rmsnorm_post


def compiled_function(mode: str, n_cols: int, eps: float) -> Callable:
    """torch.compile of the eager function, static shapes, compiled afresh per shape (on its first call)."""
    torch._dynamo.reset()  # one shape's graphs at a time: no recompile limit, no stale guards
    return torch.compile(torch_function(mode, n_cols, eps), dynamic=False)


def liger_function(mode: str, n_cols: int, eps: float) -> Callable:
    """Liger-Kernel's fused add + RMSNorm (llama casting); it writes s in post mode too."""
    from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction

    apply = LigerFusedAddRMSNormFunction.apply

    def liger_fused(x, r, w):
        y, s = apply(x, r, w, eps, 0.0, "llama", False)
        return (y, s) if mode == "pre" else (y, y)

    return liger_fused


def normgen_function(mode: str, n_cols: int, eps: float) -> Callable:
    import generated

    op = generated.add_rmsnorm

    def normgen(x, r, w):
        return op(x, r, w, eps, norm_pos=mode)

    return normgen


MAKERS = {"normgen": normgen_function, "torch": torch_function, "compile": compiled_function, "liger": liger_function}


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
    elem = timing.element_bytes(case.dtype)
    call_bytes = timing.bytes_moved(case.mode, case.rows, case.cols, elem)
    n_sets = timing.rotation_sets(call_bytes, l2)
    calls = timing.calls_per_graph(call_bytes)
    sets = timing.make_inputs(case.rows, case.cols, case.dtype, n_sets)
    x, r, w = sets[0]
    rows = []
    with torch.no_grad():
        y_ref, res_ref = torch_function(case.mode, case.cols, EPS)(x, r, w)
        for impl in impls:
            row = DeviceRow(
                case.group, case.dtype, case.rows, case.cols, case.mode, impl, call_bytes, calls=calls, sets=n_sets
            )
            rows.append(row)
            if missing.get(impl):
                row.error = missing[impl]
                continue
            try:
                fn = MAKERS[impl](case.mode, case.cols, EPS)
                t0 = time.perf_counter()
                y, res = fn(x, r, w)
                torch.cuda.synchronize()
                row.compile_s = time.perf_counter() - t0
                ok_y, err_y = timing.compare(y, y_ref)
                ok_res, err_res = timing.compare(res, res_ref) if case.mode == "pre" else (True, 0.0)
                row.ok, row.max_err = ok_y and ok_res, max(err_y, err_res)
                del y, res
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
                torch.cuda.synchronize()
    del sets, x, r, w, y_ref, res_ref
    torch.cuda.empty_cache()
    return rows


def host_callables(impls: list[str], missing: dict, mode: str, x, r, w) -> list[tuple]:
    """(impl, fn, args, kwargs, error) for each host-time column; the op itself is called as users call it."""
    result = []
    for impl in impls:
        if missing.get(impl):
            result.append((impl, None, (), {}, missing[impl]))
            continue
        try:
            result.append((impl, MAKERS[impl](mode, x.shape[-1], EPS), (x, r, w), {}, None))
        except Exception as error:
            log(f"  host-time setup of {impl} ({mode}) failed:\n" + traceback.format_exc())
            result.append((impl, None, (), {}, short_error(error)))
    return result


def measure_host(impls: list[str], missing: dict, modes: list[str], quick: bool) -> list[HostRow]:
    """Host time per eager call at HOST_SHAPE, for each impl.

    The impls are timed in turns (one batch of calls each, then the next impl, for
    every repeat), so that drift in the host's speed reaches them all alike.
    """
    dtype, n_rows, n_cols = HOST_SHAPE
    calls, reps = (500, 5) if quick else (2000, 9)
    (x, r, w) = timing.make_inputs(n_rows, n_cols, dtype, 1)[0]
    result = []
    with torch.no_grad():
        for mode in modes:
            timed = []
            for impl, fn, args, kwargs, error in host_callables(impls, missing, mode, x, r, w):
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
    add("--shapes", default="seed,llm", type=lambda t: split_list(t, ("seed", "llm"), "shape group"),
        help="shape groups: seed (the seed PR's fp32 table), llm (bf16 LLM shapes); default seed,llm")  # fmt: skip
    add("--modes", default="pre,post", type=lambda t: split_list(t, ("pre", "post"), "mode"), help="default pre,post")
    add("--peers", default=",".join(PEERS), type=lambda t: split_list(t, PEERS, "peer"),
        help=f"peers besides normgen, or none (default {','.join(PEERS)})")  # fmt: skip
    add("--reps", type=int, default=10, help="timed repeats per measurement (median reported)")
    add("--time-limit", type=float, default=480.0, help="seconds after which no new shape is started (default 480)")
    add("--self-test", action="store_true", help="CPU: the op in the interpreter, the writers on fake timings")
    args = parser.parse_args(argv)
    if args.reps < 1 or not args.modes:
        parser.error("--reps must be at least 1 and --modes name a mode")
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
    host = measure_host(impls, missing, args.modes, args.quick)
    for row in host:
        log(f"host {row.mode} {LABELS[row.impl]}: {fmt_us(row.us) or row.error} µs")
    todo = cases(args.shapes, args.modes, args.quick)
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
        log(f"[{number}/{len(todo)} {elapsed:.0f} s] {case.dtype} {case.mode} {case.rows}×{case.cols}: {summary}")
        if number % 10 == 0:  # partial results survive a killed run
            write_outputs(args.out, meta, copy, device, host, impls, plots=False)
    text = write_outputs(args.out, meta, copy, device, host, impls, plots=True)
    log(f"wrote {args.out}/bench.md, bench.json and the plots in {time.perf_counter() - started:.0f} s")
    print(text)
    return 0


# ----------------------------------------------------------------------------
# Self-test: the CPU-only parts, on fake timings


def self_test(out: Path | None) -> int:
    """Argument parsing, shape lists, normgen's maker in the interpreter, and the writers, without a GPU."""
    args = parse_args(["--quick", "--shapes", "llm", "--modes", "post", "--peers", "liger,torch", "--reps", "3"])
    assert args.quick and args.shapes == ["llm"] and args.modes == ["post"] and args.peers == ["liger", "torch"]
    assert parse_args(["--peers", "none"]).peers == []
    full = cases(["seed", "llm"], ["pre", "post"], quick=False)
    assert len(full) == 2 * (len(SEED_SHAPES) + len(LLM_ROWS) * len(LLM_HIDDEN)), len(full)
    assert full[0].rows == max(LLM_ROWS) and full[-1].group == "seed"
    assert len(cases(["seed", "llm"], ["pre"], quick=True)) == len(QUICK_SEED_SHAPES) + 4
    assert timing.bytes_moved("pre", 2, 8, 2) == 2 * (4 * 16 + 8) and timing.rotation_sets(1 << 20, 50 << 20) == 200

    # normgen's maker on CPU tensors (the kernels in Triton's interpreter) against torch eager.
    for mode in ("pre", "post"):
        x, r, w = (torch.randn(3, 100), torch.randn(3, 100), torch.rand(100) + 0.5)
        got, want = normgen_function(mode, 100, EPS)(x, r, w), torch_function(mode, 100, EPS)(x, r, w)
        assert all(timing.compare(a, b)[0] for a, b in zip(got, want, strict=True)), mode

    impls = ["normgen", *PEERS]
    groups, modes = ["seed", "llm"], ["pre", "post"]
    copy = {"bytes": 1 << 30, "ms": 0.72, "gbps": 2983.0, "samples_ms": [0.72] * 10}
    device, host = fake_results(cases(groups, modes, quick=False), impls, modes, copy["gbps"])
    versions = {"python": "3.12", "torch": "2.11.0", "triton": "3.6.0", "liger-kernel": "0.8.5"}
    meta = {"date": "2026-01-01 00:00", "device": "Fake H100 (132 SMs)", "versions": versions, "l2_mib": 50.0}
    meta |= {"groups": groups, "modes": modes, "peers": list(PEERS), "reps": 10, "quick": False}
    meta |= {"time_limit_s": 480.0, "complete": False}
    with tempfile.TemporaryDirectory() as scratch:
        folder = out or Path(scratch)
        text = write_outputs(folder, meta, copy, device, host, impls, plots=True)
        data = json.loads((folder / "bench.json").read_text(encoding="utf-8"))
        assert len(data["device"]) == len(device) and len(data["host"]) == len(host)
        assert data["device"][0]["samples"] == device[0].samples
        table_rows = [line for line in text.splitlines() if line.startswith("| ") and " × " in line]
        assert len(table_rows) == len(full), (len(table_rows), len(full))
        assert "✗" in text and "n/a" in text and "err" in text and "**incomplete**" in text
        assert text == (folder / "bench.md").read_text(encoding="utf-8")
        for entry in data["targets"]:
            assert entry["met"] <= entry["of"], entry
        pngs = sorted(p.name for p in folder.glob("bench_bf16_*.png"))
        try:
            import matplotlib  # noqa: F401

            assert pngs == ["bench_bf16_post.png", "bench_bf16_pre.png"], pngs
        except ImportError:
            log("matplotlib not installed: plots not tested")
        print(text)
        log(f"self-test passed ({'wrote ' + str(folder) if out else 'in a temporary folder'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
