"""rmsnorm/gemma_rmsnorm bf16 at exactly 8192 columns, few rows: the single pass (8 warps, the table's
below 4096 rows) against the multi pass (BLOCK_N 4096, 16 warps), which a symbolic row count would have
taken with the multi pass's entry open-ended (python docs/bench/family/exact-8192/few_rows.py, a GPU)."""

from benchmarks import tune
from dsl import pipeline

specs = {s.name: s for s in pipeline.load_specs(pipeline.SPECS)}
single, multi = tune.Config(1, 8), tune.Config(1, 16, "tiles", "multi", 4096)
for rnd in range(2):
    for op in ("rmsnorm", "gemma_rmsnorm"):
        spec = specs[op]
        b = [b for b in tune.buckets(spec, ["bf16"], False, [8192]) if b.rows_lo == 1][0]
        for rows in (1, 16, 64, 256, 1024, 2048, 4096):
            s = tune.measure(op, spec, b, single, ("none", rows, 8192), 5)
            m = tune.measure(op, spec, b, multi, ("none", rows, 8192), 5)
            print(f"r{rnd} {op} {rows}x8192 single {s:.3f} multi {m:.3f} multi/single {m / s:.3f}", flush=True)
