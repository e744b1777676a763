"""The fp8 ops (and add_rmsnorm_int8, a control: its kernels do not change) in bf16, every family
shape, pre and post: normgen's device time with this tree's dsl/device.py, CUDA-graph replay via
benchmarks.bench.measure_case; one line per case.

    python docs/bench/family/fp8-div/ab.py TAG      (from the checkout's root, on a GPU)
"""

import sys

from benchmarks import bench, timing
from benchmarks.report import Case

tag = sys.argv[1]
copy, l2 = timing.copy_bandwidth()["gbps"], timing.l2_bytes()
shapes = [
    (1, 4096),
    (64, 4096),
    (4096, 4096),
    (16384, 4096),
    (1, 8192),
    (64, 8192),
    (2048, 8192),
    (4096, 8192),
    (16384, 8192),
]
for op in ("add_layernorm_fp8", "add_rmsnorm_fp8", "add_rmsnorm_int8"):
    for rows, cols in shapes:
        for mode in ("pre", "post"):
            case = Case(op, "family", "bf16", rows, cols, mode)
            (n,) = bench.measure_case(case, ["normgen"], {}, 5, copy, l2)
            line = f"{tag} {op} {rows}x{cols} {mode} normgen {n.us:.2f} ok={n.ok}"
            print(f"{line} GB/s {n.gbps:.0f} copy {n.gbps / copy:.3f}", flush=True)
print(f"{tag} copy {copy:.0f} GB/s", flush=True)
