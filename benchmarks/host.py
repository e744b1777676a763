"""Host time per eager call, every call form side by side with the launch floor (GPU machine).

    python -m benchmarks.host [--out DIR] [--ops add_rmsnorm,rmsnorm,layernorm,add_rmsnorm_int8,...] [--shape 8,4096]
                              [--dtype bf16] [--calls 1000] [--rounds 15] [--inference] [--host cxx|python]
    python -m benchmarks.host --self-test [--out DIR]   # CPU: every form runs once, the writers

Host time per call: ``calls`` back-to-back calls, one synchronize, divided by the
calls (``timing.host_time_us``); the shape is small, so the GPU is never the
bottleneck. Every callable of an op is timed once per round, in turns, for
``rounds`` rounds, in one process; the median is reported. Calls run under
torch.no_grad() (a module's weight is a Parameter), or inference mode with --inference.

The launch floor is the issue's: two ``torch.empty_like(x)`` (one for an op without
a residual; a quantized op's q in its storage dtype, its residual out and its scale per
row) and one call of the op's compiled kernel through the direct launch the
op's Launcher caches (``Launcher.cached_launch``), its arguments built once. Each
form is also compared with its own floor: the outputs that form allocates and its
own kernel's launch. "floor, pointers as ints" passes the data pointers as ints
(as the op does for its inputs), which skips Triton's per-pointer check.

``--host`` picks the host path the ops take (dsl/host.py): the C++ one (default; the
benchmark waits for its build and reports how many calls it served), with every form also
timed on the Python path in the same rounds (rows "…, Python path": the op's C++ twin set
aside while they run), or the Python one only.

Writes DIR/host.json and DIR/host.md (default benchmarks/results/) and prints the table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks import timing

FORMS = {  # form -> (norm_pos or "default", return_rstd, inplace, module)
    "functional": ("default", False, False, False),
    "post": ("post", False, False, False),
    "inplace": ("default", False, True, False),
    "inplace post": ("post", False, True, False),
    "module": ("default", False, False, True),
    "return_rstd": ("default", True, False, False),
}


def forms_of(op) -> list[str]:
    has = {"post": "post" in op.modes, "inplace": op.has_residual, "inplace post": "post" in op.modes}
    has["return_rstd"] = "rstd" in op.stats
    return [f for f in FORMS if has.get(f, True)]


def make_callables(name: str, rows: int, cols: int, dtype: str, device: str, python_too: bool = False) -> dict:
    """label -> (callable, floor label, Python path): the op's forms (``python_too``: each also on the
    Python host path, timed with the op's C++ twin set aside), the floor and each form's own floor."""
    from dsl import launch_layout

    package = importlib.import_module(f"generated.{name}")
    op, function = package.OP, getattr(package, name)
    module_class = next(v for v in vars(package).values() if getattr(v, "op", None) is op and isinstance(v, type))
    torch_dtype = timing.DTYPES[dtype]
    g = torch.Generator().manual_seed(0)
    x, r = (torch.randn(rows, cols, generator=g).to(device, torch_dtype) for _ in range(2))
    w = torch.ones(cols, device=device, dtype=torch_dtype)
    b = torch.zeros(cols, device=device, dtype=torch_dtype) if op.has_bias else None
    args = tuple(a for a in ((x, r, w, b) if op.has_residual else (x, w, b)) if a is not None)
    module = module_class(cols, **({"bias": True} if op.has_bias else {})).to(device, torch_dtype)
    launcher = importlib.import_module(f"generated.{name}_cuda").LAUNCHER
    result = {}
    for form in forms_of(op):
        mode, rstd, inplace, is_module = FORMS[form]
        mode = op.call_modes[0] if mode == "default" else mode
        kwargs = {"norm_pos": mode} if op.has_residual else {}
        kwargs |= {"return_rstd": True} if rstd else {}
        kwargs |= {"inplace": True} if inplace else {}
        if is_module:
            if op.has_residual:
                module.norm_pos = mode
            call = (lambda m, a: lambda: m(*a))(module, args[: 1 + op.has_residual])
        else:
            call = (lambda f, a, k: lambda: f(*a, **k))(function, args, kwargs)
        call()  # compiles, and fills the launcher's and the op's caches
        own = "floor" if form in ("functional", "module") else f"floor ({form})"
        result[form] = (call, own, False)
        if python_too:
            result[f"{form}, Python path"] = (call, own, True)
        if own not in result:
            floor = launch_floor(op, launcher, launch_layout, x, r, w, b, mode, rstd, inplace, device)
            result[own] = (floor[0], None, False)
            if own == "floor":
                result["floor, pointers as ints"] = (floor[1], None, False)
    return result


def launch_floor(op, launcher, launch_layout, x, r, w, b, mode, rstd, inplace, device):
    """(floor, floor with pointers as ints): the form's allocations and one direct launch."""
    like = torch.empty_like
    n_cols = x.shape[-1]
    n_rows = x.numel() // n_cols
    new_residual = op.has_residual and mode in op.new_residual_out
    storage = op.quant_storage  # quantized ops: q in its storage dtype and a scale per row, whatever the form
    likes = (0 if inplace else new_residual) + (storage is None and not inplace)
    out = like(x, dtype=storage) if storage is not None else x if inplace else like(x)
    residual_out = (r if inplace else like(x)) if new_residual else (out if op.has_residual else None)
    scale_shape = x.shape[:-1] + (1,)
    scale = torch.empty(scale_shape, dtype=torch.float32, device=device) if storage is not None else None
    stats = torch.empty(n_rows, dtype=op.stats_dtype or x.dtype, device=device) if rstd else None
    env = (x, r if op.has_residual else None, w, b, out, residual_out, scale, None, stats, 1e-6)
    env += launch_layout.launch_tail((n_cols,) * 4, n_rows, n_cols, b is not None, False, rstd, x.dtype)
    layout = launch_layout.layout(launcher.abi, mode)
    key, kernel_args = layout.key(env), layout.args(env)
    if device == "cpu":  # self-test: no compiled kernel; a no-op stands in for the C launch
        direct, stream = (lambda *a: None, 1, 0, (), ()), lambda index: 0
    else:
        direct, stream = launcher.cached_launch(key, x.get_device()), torch._C._cuda_getCurrentRawStream
        if direct is None:
            raise RuntimeError(f"{op.name}: no direct launch cached for {key} (is this Triton's launcher known?)")
    launch, grid, function, prefix, constexprs = direct
    index = max(x.get_device(), 0)
    ints = tuple(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in kernel_args)

    def floor(k=kernel_args):
        if storage is not None:
            like(x, dtype=storage)
            torch.empty(scale_shape, dtype=torch.float32, device=device)
        for _ in range(likes):
            like(x)
        if rstd:
            torch.empty(n_rows, dtype=torch.float32, device=device)
        launch(grid, 1, 1, stream(index), function, *prefix, *k, *constexprs)

    return floor, (lambda: floor(ints))


def measure(
    ops: list[str], rows: int, cols: int, dtype: str, calls: int, rounds: int, device: str, python_too: bool = False
) -> list[dict]:
    """One row per op and call (the forms, then the floors): median µs, samples, ratios to the floors."""
    results = []
    for name in ops:
        op = importlib.import_module(f"generated.{name}").OP
        callables = make_callables(name, rows, cols, dtype, device, python_too)
        samples = {label: [] for label in callables}
        for _ in range(rounds):
            for label, (fn, _, python) in callables.items():
                if python:
                    op.native = None  # the Python path: the op's C++ twin set aside for these calls
                try:
                    if device == "cuda":
                        samples[label] += timing.host_time_us(fn, calls=calls, reps=1, warmup=20)
                    else:  # self-test: one call, its time meaningless
                        start = time.perf_counter_ns()
                        fn()
                        samples[label].append((time.perf_counter_ns() - start) / 1e3)
                finally:
                    op.native = op.twin
        us = {label: timing.median(values) for label, values in samples.items()}
        forms = [label for label, (_, own, _) in callables.items() if own is not None]
        for label in forms + [label for label in callables if label.startswith("floor")]:
            own = callables[label][1]
            row = {"op": name, "call": label, "us": us[label], "x_floor": us[label] / us["floor"]}
            row |= {"own_floor_us": us.get(own), "x_own_floor": us[label] / us[own] if own in us else None}
            results.append(row | {"samples": samples[label]})
    return results


def markdown(meta: dict, results: list[dict]) -> str:
    lines = [
        f"# Host time per eager call ({meta['dtype']} {meta['shape'][0]} × {meta['shape'][1]}, {meta['mode']})",
        "",
        f"{meta['device']}; torch {meta['torch']}, triton {meta['triton']}, Python {meta['python']}; "
        f"{meta['date']}; {meta['host']} host path. "
        f"Median µs of {meta['rounds']} interleaved rounds of {meta['calls']} calls. "
        "floor: the op's default outputs allocated (torch.empty_like) and its kernel's direct launch; "
        "its own floor: what that call form allocates and its own kernel's launch.",
        "",
        "| op | call | µs | × floor | its own floor µs | × its own floor |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for row in results:
        if row["call"].startswith("floor ("):
            continue  # in its form's row
        own = ("", "") if row["own_floor_us"] is None else (f"{row['own_floor_us']:.2f}", f"{row['x_own_floor']:.2f}")
        lines.append(f"| {row['op']} | {row['call']} | {row['us']:.2f} | {row['x_floor']:.2f} | {own[0]} | {own[1]} |")
    return "\n".join(lines) + "\n"


def write(out: Path, meta: dict, results: list[dict]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(meta, results)
    (out / "host.md").write_text(text)
    (out / "host.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--ops", default="add_rmsnorm,rmsnorm,layernorm,add_rmsnorm_int8,add_layernorm_fp8")
    parser.add_argument("--shape", default="8,4096")
    parser.add_argument("--dtype", default="bf16", choices=list(timing.DTYPES))
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--inference", action="store_true", help="time under torch.inference_mode()")
    parser.add_argument("--host", default="cxx", choices=("cxx", "python"), help="the ops' host path (dsl/host.py)")
    parser.add_argument("--self-test", action="store_true", help="CPU: every form runs once; the writers")
    args = parser.parse_args(argv)
    rows, cols = (int(v) for v in args.shape.split(","))
    device = "cpu" if args.self_test else "cuda"
    if args.self_test:
        os.environ["TRITON_INTERPRET"] = "1"  # the kernels on CPU tensors, before generated is imported
        rows, cols, args.rounds, args.host = 3, 64, 2, "python"
    elif not torch.cuda.is_available():
        print("benchmarks.host needs a CUDA GPU (try --self-test)", file=sys.stderr)
        return 2
    os.environ["NORMGEN_HOST"] = args.host  # read when dsl.host is first imported
    from dsl import host

    if args.host == "cxx" and host.module(wait=True) is None:
        print(f"benchmarks.host: the C++ host path did not build ({host._state['error']})", file=sys.stderr)
        return 1
    import triton

    context = torch.inference_mode() if args.inference else torch.no_grad()
    with context:
        python_too = args.host == "cxx" or args.self_test  # (the self-test: both row kinds, one path)
        results = measure(args.ops.split(","), rows, cols, args.dtype, args.calls, args.rounds, device, python_too)
    ops = args.ops.split(",")
    if args.self_test:
        ops_of = {name: importlib.import_module(f"generated.{name}").OP for name in ops}
        missing = [(n, f) for n, op in ops_of.items() for f in forms_of(op) if not any(r["call"] == f for r in results)]
        if missing:
            print(f"benchmarks.host self-test: no row for {missing}", file=sys.stderr)
            return 1
    meta = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (self-test: no timing)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "dtype": args.dtype,
        "shape": [rows, cols],
        "calls": args.calls,
        "rounds": args.rounds,
        "mode": "inference_mode" if args.inference else "no_grad",
        "host": args.host,
        # calls the C++ path launched, per op (the forms' warm-up calls included)
        "served": {n: getattr(importlib.import_module(f"generated.{n}").OP.twin, "served", int)() for n in ops},
    }
    print(write(args.out, meta, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
