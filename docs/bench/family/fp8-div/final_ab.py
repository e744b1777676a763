"""The shipped form (SELECT on fp32 rows): fp32 and bf16 cases of both fp8 ops, this tree; one line a case."""

import sys

from benchmarks import bench, timing
from benchmarks.report import Case

tag = sys.argv[1]
copy, l2 = timing.copy_bandwidth()["gbps"], timing.l2_bytes()
shapes = [("fp32", 1, 32768), ("fp32", 1024, 32768), ("fp32", 2048, 8192)]
shapes += [("bf16", 2048, 8192), ("bf16", 16384, 8192), ("bf16", 1024, 32768)]
for op in ("add_rmsnorm_fp8", "add_layernorm_fp8"):
    for dtype, rows, cols in shapes:
        for mode in ("pre", "post"):
            (n,) = bench.measure_case(Case(op, "family", dtype, rows, cols, mode), ["normgen"], {}, 5, copy, l2)
            print(f"{tag} {op} {dtype} {rows}x{cols} {mode} normgen {n.us:.2f} ok={n.ok}", flush=True)
