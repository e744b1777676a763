"""``python -m benchmarks.tune --self-test``: the tuner's CPU-only parts (CI).

No GPU: buckets and candidates from the planner; one candidate per pass of every op launched
through the ABI in Triton's interpreter and checked against its reference; a wrong output caught
by the check; a kernel that fails stops the run; the tuning file written from fake timings and
read back by the planner, whose table then holds each bucket's winner.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

from benchmarks import interpreter_patches
from benchmarks.calls import check, launcher_for, make_call
from benchmarks.tune import (
    Config,
    Result,
    buckets,
    candidates,
    cells,
    choose,
    measure,
    measure_bucket,
    persistent,
)
from benchmarks.tuning_file import merged, section, tuning_text


def self_test() -> int:
    """No GPU: buckets and candidates from the planner; one candidate per pass of every op launched
    through the ABI in Triton's interpreter and checked; a broken kernel must stop the run; the
    file written from fake timings and read back by the planner."""
    os.environ["TRITON_INTERPRET"] = "1"  # before triton and the generated modules are imported
    interpreter_patches.install()
    import tempfile

    from dsl import device, pipeline
    from dsl.abi import Source
    from dsl.model import DType, Target
    from dsl.plan import plan
    from dsl.targets import cuda

    specs = [s for s in pipeline.load_specs(pipeline.SPECS) if Target.CUDA in s.targets]
    for spec in specs:
        modes = [m.value for m in spec.residual] or ["none"]
        for bucket in [b for b in buckets(spec, ["fp32"], quick=False) if b.cols_hi in (128, 4096, None)]:
            configs = candidates(bucket)
            assert bucket.default in configs and all(c.block_m * bucket.block_n <= 32768 for c in configs)
            # 3 rows: a row mask; 100, 3000 or 40000 columns: a column mask; at 4096 the multi-pass
            # kernel in a single-pass bucket, over two column blocks
            width, config = {128: (100, Config(2, 4)), 4096: (3000, Config(1, 4, "tiles", "multi", 2048))}.get(
                bucket.cols_hi, (40000, Config(2, 4)))  # fmt: skip
            layouts = {c.layout(bucket) for c in configs}
            assert bucket.cols_hi != 4096 or layouts >= {("multi", 1024), ("multi", 2048), ("multi", 4096)}
            for mode in modes:
                measure(spec.name, spec, bucket, config, (mode, 3, width), 1, timed=False)
        print(f"  {spec.name}: launched through its ABI and checked against its reference", file=sys.stderr)
    # A wrong output is caught by the check ...
    call = make_call(specs[0].name, "pre", 3, 100, "fp32", "cpu")
    launcher_for(specs[0].name, "fp32", "single", 2, 128, 4, "tiles")(call["key"], False, 0, call["args"])
    check(specs[0].name, specs[0], call, "pre")
    call["tensors"][Source.OUT][1, 7] += 0.5
    try:
        check(specs[0].name, specs[0], call, "pre")
        raise AssertionError("a wrong output passed the check")
    except ValueError:
        pass
    # ... and a kernel that fails stops the run (it is never recorded as a slow candidate).
    spec = specs[0]
    bucket = buckets(spec, ["fp32"], quick=True)[0]
    module = importlib.import_module(f"generated.{spec.name}_cuda")
    kernels = dict(module.KERNELS)
    module.KERNELS["single"] = module.KERNELS["multi"] = device.tile_mask  # a jit function, not this kernel
    try:
        result = Result(bucket, [("pre", 3, 100)])
        measure_bucket(spec.name, spec, result, [Config(2, 4)], 1, timed=False)
        raise AssertionError("a failing candidate was not reported")
    except Exception as error:
        assert not isinstance(error, AssertionError), error
    finally:
        module.KERNELS.update(kernels)
    # Fake timings: the file round trip.
    results = []
    for bucket in buckets(spec, ["bf16", "fp32"], quick=False):
        result = Result(bucket, cells(bucket, ["pre", "post"], quick=False))
        for c in candidates(bucket):
            block_n = c.layout(bucket)[1]
            result.times[c] = [(1 + 0.1 * abs(math.log2(c.num_warps * 256 / block_n))) * r * w / c.block_m**0.1
                               * (0.9 if c.passes and bucket.cols_hi == 8192 else 1)  # the multi pass wins here
                               for _, r, w in result.cells]  # fmt: skip
        for c in persistent(result):
            result.times[c] = [t * 0.97 for t in result.times[replace(c, grid="tiles")]]
        choose(result)
        results.append(result)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "cuda.json"
        path.write_text(
            tuning_text(
                merged(cuda.TUNING_FILE, {"rmsnorm": section({"op": "rmsnorm"}, results, ["fp32", "fp16", "bf16"])})
            )
        )
        tuning = cuda.parse_tuning(json.loads(path.read_text()))
        assert set(tuning["ops"]) >= {"rmsnorm", tuning["fallback"]}, tuning.keys()
        rmsnorm = next(s for s in specs if s.name == "rmsnorm")
        table = plan(rmsnorm, Target.CUDA, tuning).table
        for r in results:
            b = r.bucket
            # the entry covering the bucket's rows (neighbouring rows that launch alike are one entry)
            (e,) = [
                e
                for e in table
                if (e.dtype.value, e.cols_hi) == (b.dtype, b.cols_hi)
                and e.rows_lo <= b.rows_lo
                and (e.rows_hi is None or b.rows_lo <= e.rows_hi)
            ]
            best = (r.best.block_m, r.best.num_warps, r.best.grid, *r.best.layout(b))
            assert (e.block_m, e.num_warps, e.grid.value, e.passes.value, e.block_n) == best, e
        assert any(e.passes.value == "multi" and e.cols_hi == 8192 for e in table), "the multi-pass winner was lost"
        fp16 = {(e.cols_hi, e.rows_lo, e.rows_hi): (e.block_m, e.num_warps) for e in table if e.dtype is DType.FP16}
        bf16 = {(e.cols_hi, e.rows_lo, e.rows_hi): (e.block_m, e.num_warps) for e in table if e.dtype is DType.BF16}
        assert fp16 == bf16  # fp16 measured as bf16
    print(f"self-test passed: {len(specs)} ops launched, {len(results)} buckets written and read back", file=sys.stderr)
    return 0
