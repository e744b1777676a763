"""normgen's add_rmsnorm against its peers, in one process, on the same inputs.

    python -m benchmarks.bench [--quick] [--out DIR] [--shapes seed,llm] [--modes pre,post]
                               [--peers torch,compile,liger] [--reps N] [--time-limit S]
    python -m benchmarks.bench --self-test [--out DIR]   # no GPU: the writers on fake timings

Measures (see benchmarks/README.md and timing.py for the method):

* device time per call from CUDA-graph replay, GB/s of the bytes the op must
  move and that as a fraction of the device-to-device copy bandwidth measured
  in the same run; medians of repeated runs;
* host time per eager call at bf16 (8, 4096), with the launch floor (the op's
  output allocations plus one direct launch of its compiled kernel);
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
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks import timing

EPS = 1e-6
SEED_SHAPES = ((8, 8192), (16, 4096), (32, 128), (32, 2048), (128, 128), (128, 2048), (256, 512), (1024, 1024))
LLM_ROWS = (1, 8, 64, 512, 4096, 16384, 32768)
LLM_HIDDEN = (2048, 4096, 5120, 7168, 7338, 8192)
QUICK_SEED_SHAPES = ((32, 2048), (1024, 1024))
QUICK_LLM_ROWS = (8, 4096)
QUICK_LLM_HIDDEN = (4096, 7338)
HOST_SHAPE = ("bf16", 8, 4096)  # where the GPU is not the bottleneck
BIG_ELEMENTS = 16 * 2**20  # the targets' "bf16 shapes with >= 16M elements"

PEERS = ("torch", "compile", "liger")
LABELS = {
    "normgen": "normgen",
    "torch": "torch eager",
    "compile": "torch.compile",
    "liger": "Liger",
    "floor": "floor",
    "floor_c": "floor (C launch)",
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------
# What is measured


@dataclass(frozen=True)
class Case:
    group: str  # "seed" or "llm"
    dtype: str
    rows: int
    cols: int
    mode: str

    @property
    def elements(self) -> int:
        return self.rows * self.cols


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


def table_order(case: Case, groups: list[str]) -> tuple:
    """Presentation order: groups as given; seed shapes in the seed PR's order; llm by hidden, then rows."""
    rank = groups.index(case.group) if case.group in groups else len(groups)
    mode = 0 if case.mode == "pre" else 1
    if case.group == "seed" and (case.rows, case.cols) in SEED_SHAPES:
        return (rank, case.dtype, 0, SEED_SHAPES.index((case.rows, case.cols)), mode)
    return (rank, case.dtype, case.cols, case.rows, mode)


@dataclass
class DeviceRow:
    """One impl on one (shape, mode): medians, the samples they came from, and the output check."""

    group: str
    dtype: str
    rows: int
    cols: int
    mode: str
    impl: str
    bytes: int = 0
    us: float | None = None
    gbps: float | None = None
    frac: float | None = None  # of the copy bandwidth
    samples: list[float] = field(default_factory=list)
    ok: bool | None = None  # output within tolerance of torch eager
    max_err: float | None = None
    calls: int = 0  # calls per graph
    sets: int = 0  # rotated input sets
    compile_s: float | None = None  # first call (torch.compile's compile), seconds
    error: str | None = None  # "n/a: ..." when the impl is not installed

    @property
    def case(self) -> Case:
        return Case(self.group, self.dtype, self.rows, self.cols, self.mode)


@dataclass
class HostRow:
    impl: str  # normgen, floor, torch, compile, liger
    mode: str
    dtype: str
    rows: int
    cols: int
    us: float | None = None
    samples: list[float] = field(default_factory=list)
    error: str | None = None


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
    try:
        from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction
    except ImportError:  # a Liger without the fused op: its RMSNorm after a torch add
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction

        def liger_unfused(x, r, w):
            s = x + r
            y = LigerRMSNormFunction.apply(s, w, eps, 0.0, "llama", False)
            return (y, s) if mode == "pre" else (y, y)

        return liger_unfused

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
# The launch floor (normgen's host-time target)

# Kernel parameter -> how the floor passes it (x, r, w: inputs; y, s: the new outputs).
FLOOR_ARG_EXPR = {
    "X_ptr": "x",
    "X_row_stride": "x.stride(0)",
    "R_ptr": "r",
    "R_row_stride": "r.stride(0)",
    "W_ptr": "w",
    "Y_ptr": "y",
    "Y_row_stride": "y.stride(0)",
    "RES_ptr": "s",
    "RES_row_stride": "s.stride(0)",
    "RSTD_ptr": "None",
    "STORE_RSTD": "False",
    "n_rows": "n_rows",
    "n_cols": "n_cols",
    "eps": "eps",
    "VEC": "1",  # a constexpr; only used where the launcher's options do not hold it
}


def floor_source(mode: str, arg_names: list[str], constexprs: dict) -> str:
    """Three functions over the kernel's parameters in order: ``first`` launches through Triton's
    JIT (returns the CompiledKernel); ``floor`` allocates the outputs and launches it directly with
    ``CompiledKernel.run``; ``floor_c`` does the same through the C launch function that ``run`` wraps."""
    outputs = ["y", "s"] if mode == "pre" else ["y"]
    exprs = []
    for name in arg_names:
        if name in constexprs:
            exprs.append(f"c_{name}")
        elif name in FLOOR_ARG_EXPR:
            exprs.append(FLOOR_ARG_EXPR[name])
        else:
            raise KeyError(f"kernel parameter {name!r} has no floor expression: add it to FLOOR_ARG_EXPR")
    allocate = "".join(f"    {name} = empty_like(x)\n" for name in outputs)
    args = ", ".join(exprs)
    return (
        f"def first():\n{allocate}    return kernel[grid]({args}, **launch_options)\n\n\n"
        f"def floor():\n{allocate}"
        f"    run(gx, gy, gz, stream(device_index), function, packed, None, None, None, {args})\n"
        f"    return {', '.join(outputs)},\n\n\n"
        f"def floor_c():\n{allocate}"
        f"    launch(gx, gy, gz, stream(device_index), function, coop, pdl, None, None, packed, None, None, None,"
        f" {args})\n"
        f"    return {', '.join(outputs)},\n"
    )


def normgen_floor(
    mode: str, x: torch.Tensor, r: torch.Tensor, w: torch.Tensor, eps: float, c: bool = False
) -> Callable:
    """The launch floor as the issue defines it: the op's output allocations (torch.empty_like for
    each output it returns) plus one direct launch of the already compiled kernel (``CompiledKernel.run``).
    With ``c``, the launch goes to the C function that ``run`` wraps (no scratch-memory handling):
    a lower floor, reported for information.

    Written against the launcher's documented interface: ``LAUNCHER.decide(mode, dtype token,
    rows, cols, device index) -> (kernel, grid, options, entry)``, options holding the
    constexprs (BLOCK_M, BLOCK_N) and launch options (num_warps). Adapt here if it changes.
    """
    from dsl.runtime import DTYPE_TOKEN
    from generated import add_rmsnorm_cuda as module

    n_rows, n_cols = x.shape
    device_index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    kernel, grid, options, _entry = module.LAUNCHER.decide(mode, DTYPE_TOKEN[x.dtype], n_rows, n_cols, device_index)
    constexprs = {name: options[name] for name in kernel.arg_names if name in options}
    grid = tuple(grid) + (1,) * (3 - len(grid))
    namespace = {
        "empty_like": torch.empty_like,
        "stream": torch._C._cuda_getCurrentRawStream,
        "device_index": device_index,
        "kernel": kernel,
        "grid": grid,
        "launch_options": {k: v for k, v in options.items() if k not in constexprs},
        "gx": grid[0],
        "gy": grid[1],
        "gz": grid[2],
        "x": x,
        "r": r,
        "w": w,
        "eps": eps,
        "n_rows": n_rows,
        "n_cols": n_cols,
        **{f"c_{name}": value for name, value in constexprs.items()},
    }
    exec(floor_source(mode, kernel.arg_names, constexprs), namespace)
    compiled = namespace["first"]()
    if hasattr(compiled, "result"):  # an async-compile future
        compiled = compiled.result()
    runner = namespace["run"] = compiled.run  # loads the module on first access
    namespace["function"] = compiled.function
    namespace["packed"] = compiled.packed_metadata
    if not c:
        return namespace["floor"]
    if getattr(runner, "global_scratch_size", 0) or getattr(runner, "profile_scratch_size", 0):
        raise RuntimeError("n/a: the kernel needs scratch memory, which only CompiledKernel.run allocates")
    namespace["launch"] = runner.launch
    namespace["coop"] = runner.launch_cooperative_grid
    namespace["pdl"] = runner.launch_pdl
    return namespace["floor_c"]


# ----------------------------------------------------------------------------
# Measuring


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    n_cols = x.shape[-1]
    result = []
    for impl in impls:
        if missing.get(impl):
            result.append((impl, None, (), {}, missing[impl]))
            if impl == "normgen":
                result += [("floor", None, (), {}, missing[impl]), ("floor_c", None, (), {}, missing[impl])]
            continue
        if impl == "normgen":
            import generated

            result.append((impl, generated.add_rmsnorm, (x, r, w, EPS), {"norm_pos": mode}, None))
            for name, c in (("floor", False), ("floor_c", True)):
                try:
                    floor = normgen_floor(mode, x, r, w, EPS, c=c)
                    if not torch.equal(floor()[0], generated.add_rmsnorm(x, r, w, EPS, norm_pos=mode)[0]):
                        raise RuntimeError("the floor's direct launch does not reproduce the op's output")
                    result.append((name, floor, (), {}, None))
                except Exception as error:
                    log(f"  launch {name} ({mode}) failed:\n" + traceback.format_exc())
                    result.append((name, None, (), {}, short_error(error)))
            continue
        try:
            result.append((impl, MAKERS[impl](mode, n_cols, EPS), (x, r, w), {}, None))
        except Exception as error:
            log(f"  host-time setup of {impl} ({mode}) failed:\n" + traceback.format_exc())
            result.append((impl, None, (), {}, short_error(error)))
    return result


def measure_host(impls: list[str], missing: dict, modes: list[str], quick: bool) -> list[HostRow]:
    """Host time per eager call at HOST_SHAPE, for each impl and the launch floor.

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
# Reports (pure functions of the results: --self-test runs them on fake data)


def fmt_us(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def index_rows(device: list[DeviceRow]) -> dict[Case, dict[str, DeviceRow]]:
    table: dict[Case, dict[str, DeviceRow]] = {}
    for row in device:
        table.setdefault(row.case, {})[row.impl] = row
    return table


def valid(row: DeviceRow | None) -> bool:
    return row is not None and row.us is not None and row.ok is not False


def fastest_peer_us(impl_rows: dict[str, DeviceRow]) -> float | None:
    peers = [row.us for impl, row in impl_rows.items() if impl != "normgen" and valid(row)]
    return min(peers) if peers else None


def vs_fastest_peer(impl_rows: dict[str, DeviceRow]) -> float | None:
    ours, best = impl_rows.get("normgen"), fastest_peer_us(impl_rows)
    return ours.us / best if valid(ours) and best else None


def device_cells(row: DeviceRow | None) -> list[str]:
    if row is None:
        return ["", "", ""]
    if row.error:
        return ["n/a" if row.error.startswith("n/a") else "err", "", ""]
    mark = " ✗" if row.ok is False else ""
    return [f"{fmt_us(row.us)}{mark}", f"{row.gbps:.0f}", f"{100 * row.frac:.0f}%"]


def device_table(device: list[DeviceRow], impls: list[str], groups: list[str]) -> list[str]:
    head = ["shape", "dtype", "mode"]
    for impl in impls:
        head += [f"{LABELS[impl]} µs", f"{LABELS[impl]} GB/s", f"{LABELS[impl]} % copy"]
    head.append("normgen vs fastest peer")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "--:|" * (3 * len(impls) + 1)]
    table = index_rows(device)
    for case in sorted(table, key=lambda c: table_order(c, groups)):
        impl_rows = table[case]
        cells = [f"{case.rows} × {case.cols}", case.dtype, case.mode]
        for impl in impls:
            cells += device_cells(impl_rows.get(impl))
        cells.append(fmt_ratio(vs_fastest_peer(impl_rows)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def host_us(host: list[HostRow], impl: str, mode: str) -> float | None:
    for row in host:
        if row.impl == impl and row.mode == mode:
            return row.us
    return None


def host_table(host: list[HostRow], impls: list[str], modes: list[str]) -> list[str]:
    columns = [c for c in ["normgen", "floor", "floor_c", *impls] if c != "normgen" or "normgen" in impls]
    columns = list(dict.fromkeys(columns))
    head = ["mode"] + [f"{LABELS[c]} µs" for c in columns] + ["normgen / floor", "normgen / torch eager"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "--:|" * (len(columns) + 2)]
    for mode in modes:
        cells = [mode]
        for column in columns:
            value = host_us(host, column, mode)
            cells.append("n/a" if value is None else fmt_us(value))
        ours, floor, eager = (host_us(host, c, mode) for c in ("normgen", "floor", "torch"))
        cells.append(fmt_ratio(ours / floor if ours and floor else None))
        cells.append(fmt_ratio(ours / eager if ours and eager else None))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets(device: list[DeviceRow], host: list[HostRow], modes: list[str]) -> list[dict]:
    """The issue's H100 targets, each with how many shapes meet it and which do not."""
    table = index_rows(device)
    ordered = sorted(table, key=lambda c: (c.group, c.dtype, c.cols, c.rows, c.mode != "pre"))

    def check(name: str, selected: list[Case], test: Callable[[dict], tuple[bool | None, str]]) -> dict:
        met, missed, unknown = 0, [], 0
        for case in selected:
            passed, detail = test(table[case])
            if passed is None:
                unknown += 1
            elif passed:
                met += 1
            else:
                missed.append(f"{case.rows}×{case.cols} {case.dtype} {case.mode} ({detail})")
        return {"target": name, "met": met, "of": len(selected) - unknown, "unmeasured": unknown, "missed": missed}

    def big(mode: str) -> list[Case]:
        return [c for c in ordered if c.dtype == "bf16" and c.mode == mode and c.elements >= BIG_ELEMENTS]

    def pre_bandwidth(rows):
        ours = rows.get("normgen")
        return (None, "") if not valid(ours) else (ours.frac >= 0.95, f"{100 * ours.frac:.1f}% of copy")

    def ratio_to(peer: str, limit: float):
        def test(rows):
            ours, other = rows.get("normgen"), rows.get(peer)
            if not valid(ours) or not valid(other):
                return None, ""
            return ours.us <= limit * other.us, f"{ours.us / other.us:.2f}x {LABELS[peer]}"

        return test

    def fastest(rows):
        ratio = vs_fastest_peer(rows)
        return (None, "") if ratio is None else (ratio <= 1.0, f"{ratio:.2f}x the fastest peer")

    result = [
        check("bf16 pre, >= 16M elements: >= 95% of copy bandwidth", big("pre"), pre_bandwidth),
        check("bf16 pre, >= 16M elements: no slower than Liger", big("pre"), ratio_to("liger", 1.0)),
        check("bf16 post, >= 16M elements: <= 0.8x Liger's time", big("post"), ratio_to("liger", 0.8)),
        check("every shape: device time no worse than the fastest peer", ordered, fastest),
    ]
    for mode in modes:
        ours, floor, eager = (host_us(host, c, mode) for c in ("normgen", "floor", "torch"))
        for name, other, limit in (("the launch floor", floor, 1.15), ("eager torch", eager, 0.5)):
            entry = {"target": f"host time ({mode}): <= {limit}x {name}", "met": 0, "of": 0, "unmeasured": 0}
            entry["missed"] = []
            if ours and other:
                entry["of"] = 1
                if ours <= limit * other:
                    entry["met"] = 1
                else:
                    entry["missed"] = [f"{ours / other:.2f}x"]
            else:
                entry["unmeasured"] = 1
            result.append(entry)
    return result


def markdown(meta: dict, copy: dict, device: list[DeviceRow], host: list[HostRow], impls: list[str]) -> str:
    groups, modes = meta["groups"], meta["modes"]
    ver = meta["versions"]
    lines = [
        "# add_rmsnorm: normgen and its peers",
        "",
        f"- date (UTC): {meta['date']}",
        f"- device: {meta['device']}",
        f"- torch {ver['torch']}, triton {ver['triton']}, liger-kernel {ver['liger-kernel']}, python {ver['python']}",
        f"- copy bandwidth: {copy['gbps']:.0f} GB/s (device-to-device copy of {copy['bytes'] / 2**30:.0f} GiB, "
        f"bytes read + written, median of {len(copy['samples_ms'])})",
        "- device time: CUDA-graph replay of 2 to 20 calls per graph (more when inputs rotate), "
        f"median of {meta['reps']} repeats; inputs rotate through several sets while a call moves less than "
        f"{timing.ROTATE_L2}x the L2 cache ({meta['l2_mib']:.0f} MiB)",
        "- GB/s: the bytes the op must move (pre: read x, r, write y, s; post: read x, r, write y; "
        "the weight once), divided by the device time; % copy: that over the copy bandwidth",
        "- impls: normgen = `generated.add_rmsnorm`; torch eager = `x + r` then `F.rms_norm`; "
        "torch.compile = that function, `dynamic=False`, compiled per shape; "
        "Liger = `LigerFusedAddRMSNormFunction` (llama casting; it writes s in post mode too)",
    ]
    if not meta.get("complete", True):
        lines.append(f"- **incomplete**: stopped after the {meta['time_limit_s']:.0f} s time limit")
    lines += [
        "",
        "## Device time per call",
        "",
        *device_table(device, impls, groups),
        "",
        "✗: output differs from torch eager beyond tolerance (not counted as fastest); "
        "n/a: not installed; err: failed (see bench.json). normgen vs fastest peer: below 1 is faster.",
        "",
        f"## Host time per eager call ({HOST_SHAPE[0]} {HOST_SHAPE[1]} × {HOST_SHAPE[2]})",
        "",
        *host_table(host, impls, modes),
        "",
        "floor: the op's outputs from `torch.empty_like` plus one direct launch of its compiled kernel "
        "(`CompiledKernel.run`), the issue's floor; floor (C launch): the same through the C launch function "
        "that `run` wraps, for information. Median of back-to-back calls with one synchronize at the end.",
        "",
        "## Targets",
        "",
    ]
    for entry in targets(device, host, modes):
        status = (
            "met" if entry["of"] and entry["met"] == entry["of"] else ("not measured" if not entry["of"] else "MISSED")
        )
        text = f"- {entry['target']}: {status} ({entry['met']} of {entry['of']})"
        if entry["missed"]:
            shown = entry["missed"][:8]
            more = f", and {len(entry['missed']) - 8} more" if len(entry["missed"]) > 8 else ""
            text += ": " + "; ".join(shown) + more
        lines.append(text)
    return "\n".join(lines) + "\n"


def plot(device: list[DeviceRow], impls: list[str], dtype: str, mode: str, path: Path, copy_gbps: float) -> bool:
    """Fraction of copy bandwidth versus rows, one panel per hidden size, one line per impl."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot")
        return False
    rows = [r for r in device if r.dtype == dtype and r.mode == mode and r.group == "llm"]
    widths = sorted({r.cols for r in rows})
    if not widths:
        return False
    columns = min(3, len(widths))
    lines_of_panels = math.ceil(len(widths) / columns)
    figure, axes = plt.subplots(
        lines_of_panels, columns, figsize=(4.6 * columns, 3.6 * lines_of_panels), squeeze=False, sharey=True
    )
    styles = {
        "normgen": ("C3", "o", 2.4),
        "torch": ("C0", "s", 1.4),
        "compile": ("C2", "^", 1.4),
        "liger": ("C1", "D", 1.4),
    }
    for index, width in enumerate(widths):
        ax = axes[index // columns][index % columns]
        for impl in impls:
            points = sorted((r.rows, r.frac) for r in rows if r.cols == width and r.impl == impl and valid(r))
            if points:
                color, marker, weight = styles.get(impl, (None, "x", 1.4))
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=LABELS[impl], color=color, marker=marker, linewidth=weight, markersize=4)
        if mode == "pre":
            ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ticks = sorted({r.rows for r in rows if r.cols == width})
        ax.set_xticks(ticks, [f"{t // 1024}K" if t >= 4096 else str(t) for t in ticks])
        ax.minorticks_off()
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(f"hidden {width}", fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("rows")
        if index % columns == 0:
            ax.set_ylabel("fraction of copy bandwidth")
    for index in range(len(widths), lines_of_panels * columns):
        axes[index // columns][index % columns].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.suptitle(f"add_rmsnorm {dtype} {mode}: fraction of the {copy_gbps:.0f} GB/s copy bandwidth")
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.95), ncol=len(labels), frameon=False)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_outputs(out: Path, meta: dict, copy: dict, device, host, impls, plots: bool) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(meta, copy, device, host, impls)
    (out / "bench.md").write_text(text, encoding="utf-8")
    data = {
        "meta": meta,
        "copy": copy,
        "device": [asdict(r) for r in device],
        "host": [asdict(r) for r in host],
        "targets": targets(device, host, meta["modes"]),
    }
    (out / "bench.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if plots:
        for mode in meta["modes"]:
            plot(device, impls, "bf16", mode, out / f"bench_bf16_{mode}.png", copy["gbps"])
    return text


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
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument("--quick", action="store_true", help="a handful of shapes, for a smoke run")
    parser.add_argument(
        "--out", type=Path, help="folder for bench.md, bench.json and the plots (default benchmarks/results)"
    )
    parser.add_argument(
        "--shapes",
        default="seed,llm",
        type=lambda t: split_list(t, ("seed", "llm"), "shape group"),
        help="shape groups: seed (the seed PR's fp32 table), llm (bf16 LLM shapes); default seed,llm",
    )
    parser.add_argument(
        "--modes",
        default="pre,post",
        type=lambda t: split_list(t, ("pre", "post"), "mode"),
        help="residual modes (default pre,post)",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        type=lambda t: split_list(t, PEERS, "peer"),
        help=f"peers besides normgen, or none (default {','.join(PEERS)})",
    )
    parser.add_argument("--reps", type=int, default=10, help="timed repeats per measurement (median reported)")
    parser.add_argument(
        "--time-limit", type=float, default=480.0, help="seconds after which no new shape is started (default 480)"
    )
    parser.add_argument("--self-test", action="store_true", help="no GPU: run the writers on fake timings")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if not args.modes:
        parser.error("--modes needs at least one mode")
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
        summary = ", ".join(
            f"{LABELS[r.impl]} {fmt_us(r.us)} µs {100 * r.frac:.0f}%" + (" ✗" if r.ok is False else "")
            if r.us is not None
            else f"{LABELS[r.impl]} {'n/a' if (r.error or '').startswith('n/a') else 'err'}"
            for r in rows
        )
        compile_s = [r.compile_s for r in rows if r.impl == "compile" and r.compile_s is not None]
        extra = f"; compile {compile_s[0]:.1f} s" if compile_s else ""
        log(
            f"[{number}/{len(todo)} {elapsed:.0f} s] {case.dtype} {case.mode} {case.rows}×{case.cols}: {summary}{extra}"
        )
        if number % 10 == 0:  # partial results survive a killed run
            write_outputs(args.out, meta, copy, device, host, impls, plots=False)
    text = write_outputs(args.out, meta, copy, device, host, impls, plots=True)
    log(f"wrote {args.out}/bench.md, bench.json and the plots in {time.perf_counter() - started:.0f} s")
    print(text)
    return 0


# ----------------------------------------------------------------------------
# Self-test: the CPU-only parts, on fake timings


def fake_results(impls: list[str], groups: list[str], modes: list[str], copy_gbps: float):
    """Plausible timings from a bandwidth model, with one missing peer, one mismatch and one failure."""
    efficiency = {"normgen": 0.93, "torch": 0.55, "compile": 0.8, "liger": 0.85}
    launch_us = {"normgen": 2.2, "torch": 4.5, "compile": 3.0, "liger": 2.4}
    device = []
    for case in cases(groups, modes, quick=False):
        elem = 4 if case.dtype == "fp32" else 2
        call_bytes = timing.bytes_moved(case.mode, case.rows, case.cols, elem)
        for impl in impls:
            row = DeviceRow(case.group, case.dtype, case.rows, case.cols, case.mode, impl, call_bytes, calls=20, sets=1)
            if impl == "liger" and case.group == "seed":
                row.error = "n/a: No module named 'liger_kernel'"
            elif impl == "compile" and case.rows == 1 and case.cols == 7338:
                row.error = "RuntimeError: fake failure"
            else:
                us = launch_us[impl] + call_bytes / (efficiency[impl] * copy_gbps * 1e3)
                row.samples = [us * (1 + 0.01 * k) for k in range(5)]
                row.us = timing.median(row.samples)
                row.gbps = call_bytes / (row.us * 1e-6) / 1e9
                row.frac = row.gbps / copy_gbps
                row.ok = not (impl == "torch" and case.rows == 64 and case.cols == 5120)
                row.max_err = 0.0 if row.ok else 0.5
            device.append(row)
    host = []
    fake_host = {"normgen": 6.0, "floor": 5.4, "floor_c": 4.9, "torch": 14.0, "compile": 22.0, "liger": 9.0}
    for mode in modes:
        for impl in ["normgen", "floor", "floor_c", *[i for i in impls if i != "normgen"]]:
            host.append(HostRow(impl, mode, *HOST_SHAPE, us=fake_host[impl], samples=[fake_host[impl]] * 3))
    return device, host


def self_test(out: Path | None) -> int:
    """Exercise argument parsing, shape lists, the floor's source, and the writers, without a GPU."""
    args = parse_args(["--quick", "--shapes", "llm", "--modes", "post", "--peers", "liger,torch", "--reps", "3"])
    assert args.quick and args.shapes == ["llm"] and args.modes == ["post"] and args.peers == ["liger", "torch"]
    assert parse_args(["--peers", "none"]).peers == []
    full = cases(["seed", "llm"], ["pre", "post"], quick=False)
    assert len(full) == 2 * (len(SEED_SHAPES) + len(LLM_ROWS) * len(LLM_HIDDEN)), len(full)
    assert full[0].rows == max(LLM_ROWS) and full[-1].group == "seed"
    assert len(cases(["seed", "llm"], ["pre"], quick=True)) == len(QUICK_SEED_SHAPES) + 4
    assert timing.bytes_moved("pre", 2, 8, 2) == 2 * (4 * 16 + 8)
    assert timing.bytes_moved("post", 2, 8, 2) == 2 * (3 * 16 + 8)
    assert timing.rotation_sets(1 << 30, 50 << 20) == 1
    assert timing.rotation_sets(1 << 20, 50 << 20) == 200
    assert timing.rotation_sets(100, 50 << 20) == timing.MAX_SETS
    assert timing.calls_per_graph(1 << 20) == 20 and timing.calls_per_graph(2 << 30) == 2

    # The floor's source against the generated kernels' real parameter lists.
    from generated import add_rmsnorm_cuda as module

    for key, kernel in module.KERNELS.items():
        source = floor_source(key[0], kernel.arg_names, {"BLOCK_M": 1, "BLOCK_N": 16})
        compile(source, "<floor>", "exec")
        assert ("RES_ptr" in kernel.arg_names) == (key[0] == "pre"), key
    decision = module.LAUNCHER.decide("pre", "bf16", 8, 4096, 0)
    assert len(decision) == 4 and "BLOCK_N" in decision[2], decision

    impls = ["normgen", *PEERS]
    groups, modes = ["seed", "llm"], ["pre", "post"]
    copy = {"bytes": 1 << 30, "ms": 0.72, "gbps": 2983.0, "samples_ms": [0.72] * 10}
    device, host = fake_results(impls, groups, modes, copy["gbps"])
    meta = {
        "date": "2026-01-01 00:00",
        "device": "Fake H100 (132 SMs, 80 GiB, L2 50 MiB)",
        "versions": {"python": "3.12", "torch": "2.11.0", "triton": "3.6.0", "liger-kernel": "0.8.5"},
        "l2_mib": 50.0,
        "groups": groups,
        "modes": modes,
        "peers": list(PEERS),
        "reps": 10,
        "quick": False,
        "time_limit_s": 480.0,
        "complete": False,
    }
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
