"""Probe: the cuda launch configs of some ops at the family's bf16 shapes of >= 16M elements, against
the table's own (benchmarks.tune.measure: checked, CUDA-graph device time, inputs rotated)."""

import concurrent.futures
import importlib
import multiprocessing
import os
import sys

from benchmarks import tune
from benchmarks.calls import call_bytes, make_call
from dsl import pipeline

OPS = sys.argv[1].split(",")
SHAPES = [(4096, 4096), (16384, 4096), (2048, 8192), (4096, 8192), (16384, 8192)]
if os.environ.get("SHAPES"):
    SHAPES = [tuple(map(int, s.split("x"))) for s in os.environ["SHAPES"].split(",")]


def table_config(op, rows, cols):
    launcher = importlib.import_module(f"generated.{op}_cuda").LAUNCHER
    entry = launcher.decide("bf16", rows, cols, 0)[3]
    grid = getattr(entry.grid, "value", entry.grid)
    passes = getattr(entry.passes, "value", entry.passes)
    return tune.Config(entry.block_m, entry.num_warps, grid, passes, entry.block_n)


def main():
    specs = {s.name: s for s in pipeline.load_specs(pipeline.SPECS)}
    jobs = []
    plan = []
    for op in OPS:
        spec = specs[op]
        modes = [m.value for m in spec.residual] or ["none"]
        for rows, cols in SHAPES:
            (bucket,) = tune.buckets(spec, ["bf16"], False, [cols], [rows])
            table = table_config(op, rows, cols)
            if (table.passes, table.block_n) == (bucket.passes, bucket.block_n):
                table = tune.Config(table.block_m, table.num_warps, table.grid)
            if len(sys.argv) > 2:  # m2w8,m4w16 ... per width: 4096=m2w4,m4w8;8192=m2w8
                extra = dict(item.split("=") for item in sys.argv[2].split(";"))
                configs = {table} | {
                    tune.Config(int(c[1 : c.index("w")]), int(c[c.index("w") + 1 :]))
                    for c in extra.get(str(cols), "").split(",")
                    if c
                }
            else:
                configs = {table} | {tune.Config(1, w) for w in (4, 8, 16, 32)}
                if cols == 4096:
                    configs |= {tune.Config(2, w) for w in (8, 16)}
            for mode in modes:
                cell = (mode, rows, cols)
                plan.append((op, spec, bucket, table, sorted(configs), cell))
                jobs += [(op, bucket, c, cell) for c in configs]
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(12, mp_context=ctx) as pool:
        chunks = [jobs[i::12] for i in range(12)]
        for errors in pool.map(tune.compile_ahead, chunks):
            for e in errors[:3]:
                print("compile:", e, flush=True)
    for op, spec, bucket, table, configs, cell in plan:
        mode, rows, cols = cell
        moved = call_bytes(make_call(op, mode, rows, cols, "bf16", "cuda"), mode)
        times = {}
        for c in configs:
            try:
                times[c] = tune.measure(op, spec, bucket, c, cell, 7)
            except Exception as error:
                print(f"{op} {mode} {rows}x{cols} {c}: {type(error).__name__} {str(error)[:80]}", flush=True)
        base = times.get(table)
        best = min(times, key=times.get)
        line = " ".join(
            f"m{c.block_m}w{c.num_warps}{'p' if c.grid != 'tiles' else ''}={t:.2f}" for c, t in times.items()
        )
        print(
            f"{op:18s} {mode:4s} {rows:5d}x{cols:<5d} table m{table.block_m}w{table.num_warps} {base:.2f} us "
            f"({moved / base / 1e3:.0f} GB/s); best m{best.block_m}w{best.num_warps} {times[best]:.2f} "
            f"({times[best] / base:.3f}x) | {line}",
            flush=True,
        )


if __name__ == "__main__":
    main()
