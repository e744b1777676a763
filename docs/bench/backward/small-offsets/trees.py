"""Device time (profiler) of normgen's forward and backward at a few shapes, in this process's tree
(PYTHONPATH picks it). Prints one line per case: fwd|bwd op mode RxC dtype us ok.
python trees.py fwd|bwd|both"""
# ruff: noqa: B023  (each closure is called within its own loop iteration)

import sys

import torch

from benchmarks import backward as B
from benchmarks import ops

which = sys.argv[1] if len(sys.argv) > 1 else "both"
dtype = sys.argv[2] if len(sys.argv) > 2 else "bf16"
BWD = [
    ("add_rmsnorm", "pre", 4096, 4096),
    ("add_rmsnorm", "post", 8192, 4096),
    ("add_rmsnorm", "pre", 2048, 16384),
    ("add_rmsnorm", "post", 16384, 2048),
    ("add_rmsnorm", "pre", 4096, 8192),
    ("rmsnorm", "-", 4096, 4096),
    ("rmsnorm", "-", 4096, 8192),
    ("rmsnorm", "-", 2048, 16384),
    ("layernorm", "-", 4096, 4096),
    ("layernorm", "-", 4096, 8192),
    ("layernorm", "-", 2048, 16384),
    ("rmsnorm", "-", 32, 4096),
    ("layernorm", "-", 32, 4096),
    ("add_rmsnorm", "pre", 32, 4096),
]
FWD_OPS = [
    ("add_rmsnorm", "pre"),
    ("add_rmsnorm", "post"),
    ("rmsnorm", "-"),
    ("layernorm", "-"),
    ("add_layernorm", "pre"),
    ("gemma_rmsnorm", "-"),
    ("add_rmsnorm_int8", "pre"),
    ("add_layernorm_fp8", "post"),
]
FWD_SHAPES = [(16384, 4096), (4096, 4096), (2048, 8192), (4096, 8192), (16384, 8192), (64, 4096), (1, 4096)]


def fwd(op, mode, rows, cols):
    nbytes = rows * cols * 2 * 4
    n_sets = max(1, min(16, (256 * 2**20) // nbytes))
    sets = ops.make_inputs(op, rows, cols, dtype, n_sets)
    fn = ops.MAKERS["normgen"](op, mode)
    with torch.no_grad():
        for s in sets:
            fn(*s)
        runs = [B.device_us(lambda i: fn(*sets[i % n_sets]), 20) for _ in range(5)]
    runs.sort()
    return runs[2]


def bwd(op, mode, rows, cols):
    sets = ops.make_inputs(op, rows, cols, dtype, 4)
    prepared = [B.prepare("normgen", op, mode, s, i) for i, s in enumerate(sets)]
    _, outs, leaves, grads = prepared[0]
    got = torch.autograd.grad(outs, leaves, grads, retain_graph=True)
    ok = B.close(got, B.reference_grads(op, mode, sets[0]), dtype)

    def run(i):
        _, outs, leaves, grads = prepared[i % 4]
        torch.autograd.grad(outs, leaves, grads, retain_graph=True)

    for i in range(4):
        run(i)
    runs = sorted(B.device_us(run, 10) for _ in range(5))
    return runs[2], ok


if which in ("bwd", "both"):
    for op, mode, rows, cols in BWD:
        us, ok = bwd(op, mode, rows, cols)
        print(f"bwd {op} {mode} {rows}x{cols} {dtype} {us:.2f} {'ok' if ok else 'WRONG'}", flush=True)
if which in ("fwd", "both"):
    for op, mode in FWD_OPS:
        for rows, cols in FWD_SHAPES:
            print(f"fwd {op} {mode} {rows}x{cols} {dtype} {fwd(op, mode, rows, cols):.2f} ok", flush=True)
