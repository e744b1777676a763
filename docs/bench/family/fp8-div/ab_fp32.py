"""fp32 fp8 ops at 16385-32768 columns (the spilling entries): normgen device time, this tree (bcfbe56)."""

import sys

from benchmarks import bench, timing
from benchmarks.report import Case

tag = sys.argv[1]
copy, l2 = timing.copy_bandwidth()["gbps"], timing.l2_bytes()
for op in ("add_rmsnorm_fp8", "add_layernorm_fp8"):
    for rows, cols in ((1, 32768), (64, 32768), (1024, 32768), (4096, 32760), (512, 8192)):
        for mode in ("pre", "post"):
            dtype = "bf16" if cols == 8192 else "fp32"
            case = Case(op, "family", dtype, rows, cols, mode)
            (n,) = bench.measure_case(case, ["normgen"], {}, 5, copy, l2)
            print(f"{tag} {op} {dtype} {rows}x{cols} {mode} normgen {n.us:.2f} ok={n.ok}", flush=True)
