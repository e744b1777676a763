"""Backward device time at 16384-column rows: each op's table entry, and its entry with the grid forced
persistent (layer norms take the split grid there). Run in two trees (int64 / int32 row offsets).
python lnwide.py [dtypes]"""
# ruff: noqa: B023  (each closure is called within its own loop iteration)

import importlib
import os
import sys

import torch

from benchmarks import backward as B
from benchmarks import ops

dtypes = (sys.argv[1] if len(sys.argv) > 1 else "bf16").split(",")

OPMODES = [
    ("layernorm", "-"),
    ("add_layernorm", "pre"),
    ("add_layernorm", "post"),
    ("rmsnorm", "-"),
    ("add_rmsnorm", "pre"),
]
if os.environ.get("OPS"):
    OPMODES = [om for om in OPMODES if om[0] in os.environ["OPS"].split(",")]
SHAPES = [(1024, 16384), (2048, 16384), (4096, 16384), (8192, 16384), (2048, 12288)]
if os.environ.get("SHAPES"):
    SHAPES = [tuple(map(int, s.split("x"))) for s in os.environ["SHAPES"].split(",")]
CASES = [(op, mode, rows, cols) for op, mode in OPMODES for rows, cols in SHAPES]


def bwd(op, mode, rows, cols, dtype):
    sets = ops.make_inputs(op, rows, cols, dtype, 3)
    prepared = [B.prepare("normgen", op, mode, s, i) for i, s in enumerate(sets)]
    _, outs, leaves, grads = prepared[0]
    got = torch.autograd.grad(outs, leaves, grads, retain_graph=True)
    ok = B.close(got, B.reference_grads(op, mode, sets[0]), dtype)

    def run(i):
        _, outs, leaves, grads = prepared[i % 3]
        torch.autograd.grad(outs, leaves, grads, retain_graph=True)

    for i in range(3):
        run(i)
    runs = sorted(B.device_us(run, 6) for _ in range(5))
    return runs[2], ok


for dtype in dtypes:
    for op, mode, rows, cols in CASES:
        launcher = importlib.import_module(f"generated.{op}_cuda").BACKWARD_LAUNCHER
        table = launcher.table
        own = type(table).lookup.__get__(table)
        grid = own(dtype, rows, cols).grid
        for force in (None,) if os.environ.get("NOFORCE") else (None, "persistent"):
            if force and grid == force:
                continue
            if force:
                table.lookup = lambda d, r, c, own=own, force=force: own(d, r, c)._replace(grid=force)
            launcher.slow.clear()
            launcher.fast.clear()
            launcher.compiled.clear()
            us, ok = bwd(op, mode, rows, cols, dtype)
            print(
                f"{op} {mode} {rows}x{cols} {dtype} {force or 'table:' + grid} {us:.2f} {'ok' if ok else 'WRONG'}",
                flush=True,
            )
            if force:
                del table.lookup
                launcher.slow.clear()
                launcher.fast.clear()
                launcher.compiled.clear()
