"""Where the host time of one eager add_rmsnorm call goes (GPU machine).

    python -m benchmarks.host [--shape 8,4096] [--calls 5000]

Times back-to-back calls (one synchronize at the end) of the op and of its
pieces: the checks, the allocations, the launch, and the op with its launch
replaced by a no-op; then prints a cProfile of the op's calls. Used to keep the
launcher lean; the benchmark (bench.py) reports the headline numbers.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import pstats
import time

import torch

import generated


def per_call_us(fn, calls: int) -> float:
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter_ns() - start) / calls / 1e3)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="8,4096")
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args(argv)
    rows, cols = (int(v) for v in args.shape.split(","))
    x = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16)
    r, w = torch.randn_like(x), torch.randn(cols, device="cuda", dtype=torch.bfloat16)
    op = importlib.import_module("generated.add_rmsnorm")
    kernels = importlib.import_module("generated.add_rmsnorm_cuda")
    launcher = kernels.LAUNCHER
    calls = args.calls
    results = {}
    for mode in ("pre", "post"):
        call = lambda: generated.add_rmsnorm(x, r, w, 1e-6, mode)  # noqa: B023
        results[f"{mode}: op"] = per_call_us(call, calls)
        results[f"{mode}: checks"] = per_call_us(lambda: op._check(x, r, w, 1e-6, mode, False), calls)  # noqa: B023
        results[f"{mode}: outputs"] = per_call_us(lambda: op._new_outputs(x, mode, False, False), calls)  # noqa: B023
        key, fast = next((k, v) for k, v in launcher.fast[0].items() if k[0] == mode)
        new = op._new_outputs(x, mode, False, False)
        slots = op._slots(new, x, r, mode, False, False)
        out, residual_out = slots[0], slots[1]
        launch_args = (
            (x, cols, r, cols, w, out, cols, residual_out, cols, None, rows, cols, 1e-6, False)
            if mode == "pre"
            else (x, cols, r, cols, w, out, cols, None, rows, cols, 1e-6, False)
        )
        results[f"{mode}: launcher call"] = per_call_us(lambda: launcher(key, True, 0, launch_args), calls)  # noqa: B023
        launch, grid, function, prefix, blocks = fast

        def raw(launch=launch, grid=grid, function=function, prefix=prefix, blocks=blocks, args=launch_args):
            launch(grid, 1, 1, torch._C._cuda_getCurrentRawStream(0), function, *prefix, *args, *blocks)

        results[f"{mode}: C launch"] = per_call_us(raw, calls)
        saved = launcher.__call__
        try:
            type(launcher).__call__ = lambda self, *a: None
            results[f"{mode}: op without launch"] = per_call_us(call, calls)
        finally:
            type(launcher).__call__ = saved
    results["2x empty_like"] = per_call_us(lambda: (torch.empty_like(x), torch.empty_like(x)), calls)
    results["pre: op (again)"] = per_call_us(lambda: generated.add_rmsnorm(x, r, w, 1e-6, "pre"), calls)

    class Counting(dict):
        misses = 0

        def get(self, key, default=None):
            value = super().get(key, default)
            Counting.misses += value is None
            return value

    launcher.fast[0] = Counting(launcher.fast[0])
    for mode in ("pre", "post"):
        Counting.misses = 0
        for _ in range(100):
            generated.add_rmsnorm(x, r, w, 1e-6, mode)
        print(f"{mode}: {Counting.misses} of 100 calls missed the direct-launch cache")
    for key in launcher.fast[0]:
        print("  direct key:", key)
    results["eager torch x + r; rms_norm"] = per_call_us(
        lambda: torch.nn.functional.rms_norm(x + r, (cols,), w, 1e-6), calls
    )
    for name, value in results.items():
        print(f"{name:32s} {value:7.2f} us")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(2000):
        generated.add_rmsnorm(x, r, w, 1e-6, "pre")
    profile.disable()
    torch.cuda.synchronize()
    pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
