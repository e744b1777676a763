"""Which of the two edits makes add_rmsnorm_fp8 fp32 at 32768 columns spill: the old and new helpers mixed.

Ran on bcfbe56's tree (its div_by_row took no SELECT), `python mix.py DIV-CODE` from the root, each old or new.
"""

import sys

import dsl._old_device as old  # (a copy of dsl/device.py before bcfbe56, put there for the run)

import dsl.device as new

variant = sys.argv[1]  # div-code: each old or new
div, code = variant.split("-")
import generated.add_layernorm_fp8_cuda as ln  # noqa: E402
import generated.add_rmsnorm_fp8_cuda as rms  # noqa: E402

for mod in (ln, rms):
    mod.div_by_row = (old if div == "old" else new).div_by_row
    mod.fp8_e4m3_code = (old if code == "old" else new).fp8_e4m3_code

from benchmarks import bench, timing  # noqa: E402
from benchmarks.report import Case  # noqa: E402

copy, l2 = timing.copy_bandwidth()["gbps"], timing.l2_bytes()
shapes = [("fp32", 1, 32768), ("fp32", 1024, 32768), ("fp32", 4096, 32760), ("fp32", 64, 16384), ("fp32", 2048, 8192)]
shapes += [("bf16", 2048, 8192), ("bf16", 16384, 8192), ("bf16", 1, 32768), ("bf16", 1024, 32768)]
for op in ("add_rmsnorm_fp8", "add_layernorm_fp8"):
    for dtype, rows, cols in shapes:
        for mode in ("pre", "post"):
            (n,) = bench.measure_case(Case(op, "family", dtype, rows, cols, mode), ["normgen"], {}, 5, copy, l2)
            print(f"{variant} {op} {dtype} {rows}x{cols} {mode} normgen {n.us:.2f} ok={n.ok}", flush=True)
