"""rmsnorm/gemma_rmsnorm bf16 at 8192 columns (8191 and 6144 as controls): normgen (this tree's tables)
and torch.compile, CUDA-graph replay via benchmarks.bench.measure_case; one line per case.

    python docs/bench/family/exact-8192/ab.py TAG      (from the checkout's root, on a GPU)
"""

import sys

from benchmarks import bench, timing
from benchmarks.report import Case

tag = sys.argv[1]
copy, l2 = timing.copy_bandwidth()["gbps"], timing.l2_bytes()
shapes = [(2048, 8192), (4096, 8192), (8192, 8192), (16384, 8192), (4096, 8191), (16384, 6144)]
for op in ("rmsnorm", "gemma_rmsnorm"):
    for rows, cols in shapes:
        case = Case(op, "family", "bf16", rows, cols, "-")
        res = {r.impl: r for r in bench.measure_case(case, ["normgen", "compile"], {}, 5, copy, l2)}
        n, c = res["normgen"], res["compile"]
        line = f"{tag} {op} {rows}x{cols} normgen {n.us:.2f} ok={n.ok} compile {c.us:.2f} ratio {n.us / c.us:.4f}"
        print(line, flush=True)
print(f"{tag} copy {copy:.0f} GB/s", flush=True)
