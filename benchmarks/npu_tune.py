"""Choose the npu table's tiles for rows wider than 2048 columns; write dsl/tuning/npu.json.

    python -m benchmarks.npu_tune --defaults            from the unified-buffer model (no NPU needed)
    python build.py --tune npu                          measure on an Ascend NPU (torch_npu and a device)
    python -m benchmarks.npu_tune --recorded FILE       choose from timings recorded on an NPU (a JSON)
    python -m benchmarks.npu_tune --self-test           CPU: candidates launched in Triton's interpreter

The buckets (``BUCKETS``): widths 2049..8192 in steps of 1024 columns, split where
the seed's rules change, and 8193 and wider; the row ranges of the seed's rules at
the bucket's narrowest width. Candidates per
bucket and row range (``candidates``): the seed's column loop (its rows, 2048
columns) and, for a bounded bucket, one pass over the whole row (BLOCK_N the
bucket's widest row rounded up to 1024) in 1, 2 or 4 rows up to the seed's, with and without
multi-buffering: every tile the unified-buffer model says the compiler can plan
(``dsl/targets/npu_ub.py``, fitted to bishengir-compile; CI plans every layout the
table holds).

``--defaults``: the single-pass candidate with the most rows (multi-buffered where
it fits), else the seed's column loop. ``--tune npu``: each candidate launched
through a one-entry launcher on the bucket's shapes in every residual mode,
checked against the op's generated reference, then timed (median device time
over ``--reps`` runs of ``CALLS`` launches between two NPU events); the lowest
geometric mean of time / the best time there wins, the default kept within 1 %.
A candidate that raises or computes a wrong output stops the run (nothing is
written). No NPU was available where this was written: the measuring path has
run only against recorded timings (``--recorded``, tests/test_npu_tune.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from pathlib import Path

from dsl.targets import npu, npu_tuning
from dsl.targets.npu_tuning import Choice

# 1024-column steps, split where the seed's row rules change (4096, 8192): a file of the seed's choices
# is the seed's table. A single pass holds the bucket's widest row rounded up to 1024 columns.
BUCKETS = (
    (2049, 3072), (3073, 4095), (4096, 4096), (4097, 5120), (5121, 6144), (6145, 7168), (7169, 8191), (8192, 8192),
    (8193, None),
)  # fmt: skip
SINGLE_STEP = 1024
SINGLE_ROWS = (4, 2, 1)
ROW_SAMPLES = (1, 8, 64, 512)
CALLS = 20
KEEP_DEFAULT_WITHIN = 1.01


def _multi(spec, dtype, cols_lo, cols_hi, rows_lo, rows_hi, rows) -> Choice:
    """The seed's column loop: its rows, halved until the tile fits (as the table does up to 2048)."""
    from dsl.table import Pass

    block_n = npu.max_block_n(spec, dtype, Pass.MULTI)
    while rows > 1 and npu.ub_least(spec, dtype, Pass.MULTI, rows, block_n) > npu.UB_BYTES:
        rows //= 2
    mb = npu.multibuffer_fits(spec, dtype, Pass.MULTI, rows, block_n)
    return Choice(dtype, cols_lo, cols_hi, rows_lo, rows_hi, Pass.MULTI, rows, block_n, mb)


def buckets(spec) -> list[tuple]:
    """(dtype, cols_lo, cols_hi, rows_lo, rows_hi, the seed's rows) of every bucket and row range."""
    rows_of = npu.row_rules_of(spec)[0]
    result = []
    for dtype in spec.dtypes:
        for cols_lo, cols_hi in BUCKETS:
            for rows_lo, rows_hi, rows in rows_of(cols_lo, npu.MULTI_BLOCK_N, dtype):
                result.append((dtype, cols_lo, cols_hi, rows_lo, rows_hi, rows))
    return result


def candidates(spec, bucket) -> list[Choice]:
    """The seed's column loop first (the default where no single pass fits), then every single-pass tile
    the model lets the compiler plan, most rows first, multi-buffered first."""
    from dsl.table import Pass

    dtype, cols_lo, cols_hi, rows_lo, rows_hi, seed_rows = bucket
    found = [_multi(spec, dtype, cols_lo, cols_hi, rows_lo, rows_hi, seed_rows)]
    if cols_hi is None or spec.is_quantized:  # quantized kernels plan at most 384 columns per tile
        return found
    block_n = -(-cols_hi // SINGLE_STEP) * SINGLE_STEP
    for rows in [r for r in SINGLE_ROWS if r <= seed_rows]:
        if npu.ub_least(spec, dtype, Pass.SINGLE, rows, block_n) > npu.UB_BYTES:
            continue
        for mb in (True, False):
            if not mb or npu.multibuffer_fits(spec, dtype, Pass.SINGLE, rows, block_n):
                found.append(Choice(dtype, cols_lo, cols_hi, rows_lo, rows_hi, Pass.SINGLE, rows, block_n, mb))
    return found


def default(spec, bucket) -> Choice:
    found = candidates(spec, bucket)
    return found[1] if len(found) > 1 else found[0]


def row(choice: Choice, **extra) -> dict:
    values = {name: getattr(choice, name) for name in npu_tuning.FIELDS}
    return values | {"dtype": choice.dtype.value, "passes": choice.passes.value} | extra


def choice_of(data: dict) -> Choice:
    from dsl.model import DType
    from dsl.table import Pass

    values = {name: data[name] for name in npu_tuning.FIELDS}
    return Choice(**values | {"dtype": DType(data["dtype"]), "passes": Pass(data["passes"])})


def specs(ops: list[str] | None, spec_dir=None) -> list:
    from dsl import pipeline
    from dsl.model import Target

    found = [s for s in pipeline.load_specs(spec_dir or pipeline.SPECS) if Target.NPU in s.targets]
    unknown = sorted(set(ops or ()) - {s.name for s in found})
    if unknown:
        raise SystemExit(f"npu tune: no npu op named {', '.join(unknown)}")
    return [s for s in found if not ops or s.name in ops]


def defaults(ops=None, out: Path = npu_tuning.TUNING_FILE, spec_dir=None) -> Path:
    """Write each op's default choices (``default``) to the tuning file (other ops' sections kept)."""
    method = "defaults: the single-pass tile with the most rows (up to the seed's) that the unified-buffer model, "
    method += "fitted to bishengir-compile's plans, lets the compiler plan; else the seed's column loop"
    sections = {
        s.name: {"method": method, "best": [row(default(s, b)) for b in buckets(s)]} for s in specs(ops, spec_dir)
    }
    return write(out, sections)


def write(out: Path, sections: dict) -> Path:
    data = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {"ops": {}}
    data["ops"] = {**data["ops"], **sections}
    npu_tuning.parse_tuning(data)  # what the pipeline will read
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(npu_tuning.tuning_text(data), encoding="utf-8")
    return out


# ----------------------------------------------------------------------------
# Choosing from timings (measured here or recorded elsewhere)


def cells(spec, bucket) -> list[tuple[str, int, int]]:
    """(mode, rows, cols): the bucket's widest row (an open bucket: 16384) and a ragged one, rows in range."""
    _, cols_lo, cols_hi, rows_lo, rows_hi, _ = bucket
    widths = [cols_hi, cols_hi - 96] if cols_hi else [2 * (cols_lo - 1), cols_lo + 64]
    rows = [r for r in ROW_SAMPLES if rows_lo <= r and (rows_hi is None or r <= rows_hi)] or [rows_lo]
    modes = [m.value for m in spec.residual] or ["none"]
    return [(mode, r, w) for w in widths for r in rows for mode in modes]


def choose(spec, bucket, times: dict[Choice, list[float]]) -> Choice:
    """The lowest geometric mean of time / the best time per shape; the default kept within 1 %."""
    floor = [min(ts[i] for ts in times.values()) for i in range(len(next(iter(times.values()))))]
    score = {c: math.exp(sum(math.log(t / f) for t, f in zip(ts, floor, strict=True)) / len(floor))
             for c, ts in times.items()}  # fmt: skip
    best = min(score, key=lambda c: (score[c], candidates(spec, bucket).index(c)))
    fallback = default(spec, bucket)
    return fallback if score.get(fallback, math.inf) <= score[best] * KEEP_DEFAULT_WITHIN else best


def section(spec, recorded: list[dict], meta: dict) -> dict:
    """One op's section from its timings: every candidate of every bucket must be there, none may have
    failed, and no timing may be of a tile that is not a candidate."""
    where = f"npu tune: {spec.name}"
    by_bucket: dict[tuple, dict[Choice, list[float]]] = {}
    for record in recorded:
        choice = choice_of(record["candidate"])
        if record.get("error"):
            raise ValueError(f"{where}: candidate {row(choice)} failed: {record['error']}")
        by_bucket.setdefault((choice.dtype, choice.cols_lo, choice.rows_lo), {})[choice] = record["us"]
    best, measurements = [], []
    for bucket in buckets(spec):
        found = by_bucket.pop(bucket[:2] + bucket[3:4], {})
        wanted = candidates(spec, bucket)
        stray = [row(c) for c in found if c not in wanted]
        if stray:
            raise ValueError(f"{where}: timings of tiles that are not candidates (over the unified buffer?): {stray}")
        missing = [row(c) for c in wanted if c not in found]
        if missing:
            raise ValueError(f"{where}: no timings for {missing}")
        shapes = {len(ts) for ts in found.values()}
        if shapes != {len(cells(spec, bucket))}:
            raise ValueError(f"{where} {bucket[0].value} cols {bucket[1]}..: {shapes} timings per candidate, not "
                             f"one per shape ({len(cells(spec, bucket))})")  # fmt: skip
        best.append(row(choose(spec, bucket, found)))
        measurements += [row(c, us=[round(t, 3) for t in found[c]]) for c in wanted]
    if by_bucket:
        raise ValueError(f"{where}: timings of buckets the table does not have: {sorted(map(str, by_bucket))}")
    return {**meta, "best": best, "measurements": measurements}


def from_recorded(path: Path, out: Path = npu_tuning.TUNING_FILE, ops=None, spec_dir=None) -> Path:
    """Choose from a recording (``{"device", "date", "timings": [{"op", "candidate": {...}, "us": [...]}
    or {"op", "candidate", "error"}]}``, one time per shape of ``cells``) and write the file. The ops
    are ``spec_dir``'s (the shipped specs by default), those that measured them; timings of an op not
    there are refused (their choice would be judged against another op's candidates, or dropped)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    meta = {"device": data["device"], "date": data["date"], "method": "measured: " + data.get("method", "")}
    known = {spec.name for spec in specs(None, spec_dir)}
    strangers = sorted({r["op"] for r in data["timings"]} - known)
    if strangers:
        raise ValueError(f"npu tune: {path} has timings of {', '.join(strangers)}, not an npu op of these specs")
    sections = {}
    for spec in specs(ops, spec_dir):
        recorded = [r for r in data["timings"] if r["op"] == spec.name]
        if recorded:
            sections[spec.name] = section(spec, recorded, meta)
    if not sections:
        raise ValueError(f"npu tune: {path} has no timings of any npu op")
    return write(out, sections)


# ----------------------------------------------------------------------------
# Measuring on an NPU (torch_npu); it has not run here: no NPU


def has_npu() -> bool:
    try:
        import torch
        import torch_npu  # noqa: F401
    except ImportError:
        return False
    return bool(torch.npu.is_available() and torch.npu.device_count())


def measure(spec, choice: Choice, cell, reps: int, device: str = "npu") -> float:
    """Median µs per launch of one candidate on one shape, after its outputs are checked."""
    from benchmarks.calls import check, launcher_for, make_call

    mode, rows, cols = cell
    launch = launcher_for(spec.name, choice.dtype.value, choice.passes.value, choice.block_m, choice.block_n, 1,
                          "persistent", "npu", choice.multibuffer)  # fmt: skip
    call = make_call(spec.name, mode, rows, cols, choice.dtype.value, device, target="npu")
    launch(call["key"], False, 0, call["args"])
    check(spec.name, spec, call, mode)
    if device != "npu":
        return 0.0
    import torch

    times = []
    for _ in range(reps):
        start, end = torch.npu.Event(enable_timing=True), torch.npu.Event(enable_timing=True)
        start.record()
        for _ in range(CALLS):
            launch(call["key"], False, 0, call["args"])
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / CALLS)
    return sorted(times)[len(times) // 2]


def tune(spec_dir=None, out: Path | None = None, ops=None, reps: int = 5) -> Path:
    """Measure every candidate of every bucket on this NPU and write the file (``python build.py --tune npu``)."""
    if not has_npu():
        raise SystemExit(
            "tune npu: needs torch_npu and an Ascend NPU, and this machine has neither; "
            "python -m benchmarks.npu_tune --defaults writes the file from the compiler-fitted model, "
            "--recorded FILE from timings recorded on an NPU"
        )
    import torch

    timings = []
    for spec in specs(ops, spec_dir):
        for bucket in buckets(spec):
            for choice in candidates(spec, bucket):  # an error propagates: the run stops
                us = [measure(spec, choice, cell, reps) for cell in cells(spec, bucket)]
                timings.append({"op": spec.name, "candidate": row(choice), "us": us})
            print(f"{spec.name} {bucket[0].value} cols {bucket[1]}..{bucket[2] or ''}: measured", file=sys.stderr)
    recording = Path(out or npu_tuning.TUNING_FILE).with_suffix(".timings.json")
    meta = {
        "device": torch.npu.get_device_name(0),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "method": f"median of {reps} x {CALLS} launches between NPU events per shape; geometric mean over shapes",
        "timings": timings,
    }
    recording.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return from_recorded(recording, out or npu_tuning.TUNING_FILE, ops, spec_dir)


def self_test() -> int:
    """No NPU (triton-ascend's interpreter, in .venv-npu; scripts/npu_checks.sh runs it): the column loop
    and a single pass of each unquantized residual op launched through a one-entry launcher and checked
    against the reference; a kernel that fails must stop the run."""
    import importlib
    import os

    os.environ["TRITON_INTERPRET"] = "1"  # before triton and the generated modules are imported
    os.environ["NORMGEN_INTERPRET_TARGET"] = "npu"
    from dsl import device

    tested = [s for s in specs(None) if s.has_residual and not s.is_quantized]
    for spec in tested:
        for bucket in [b for b in buckets(spec) if b[0].value == "fp32" and b[2] in (3072, None)]:
            for choice in candidates(spec, bucket)[:2]:
                for mode in [m.value for m in spec.residual]:  # 3 rows, 100 columns past the bucket's start: masks
                    measure(spec, choice, (mode, 3, bucket[1] + 100), 1, device="cpu")
        print(f"  {spec.name}: its candidates launched and checked", file=sys.stderr)
    spec = tested[0]
    module = importlib.import_module(f"generated.{spec.name}_npu")
    kernels = dict(module.KERNELS)
    module.KERNELS["single"] = module.KERNELS["multi"] = device.tile_mask  # a jit function, not this kernel
    try:
        measure(spec, candidates(spec, buckets(spec)[0])[0], ("pre", 3, 2100), 1, device="cpu")
        raise AssertionError("a failing candidate was not reported")
    except Exception as error:
        assert not isinstance(error, AssertionError), error
    finally:
        module.KERNELS.update(kernels)
    print("self-test passed", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.npu_tune", description=__doc__.splitlines()[0])
    parser.add_argument("--ops", help="comma-separated op names (default: every shipped op with an npu target)")
    parser.add_argument("--out", type=Path, default=npu_tuning.TUNING_FILE, help="the tuning file")
    parser.add_argument("--specs", type=Path, help="folder of *.norm specs (default: the shipped dsl/specs)")
    source = parser.add_mutually_exclusive_group()  # (with both, --recorded was ignored)
    source.add_argument("--defaults", action="store_true", help="from the unified-buffer model, no NPU")
    source.add_argument("--recorded", type=Path, help="choose from timings recorded on an NPU (JSON)")
    parser.add_argument("--reps", type=int, default=5, help="timed repeats per shape (on an NPU)")
    parser.add_argument("--self-test", action="store_true", help="no NPU: candidates in the interpreter")
    args = parser.parse_args(argv)
    ops = args.ops.split(",") if args.ops else None
    if args.self_test:
        return self_test()
    if args.defaults:
        print(f"wrote {defaults(ops, args.out, args.specs)}", file=sys.stderr)
    elif args.recorded:  # (a recording of `build.py --specs DIR --tune npu` needs the same --specs)
        try:
            print(f"wrote {from_recorded(args.recorded, args.out, ops, args.specs)}", file=sys.stderr)
        except ValueError as error:  # (the recording's or a tile's problem, in one line)
            print(f"error: {error}", file=sys.stderr)
            return 2
    else:
        tune(args.specs, args.out, ops, args.reps)
    print("run `python build.py` to regenerate the npu tables", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
