"""Which cuda kernels spill registers at the launches the dispatch tables choose (needs a GPU).

    python scripts/spills.py [--ops add_rmsnorm,layernorm] [--dtypes bf16] [--jobs 10] [--out DIR]

(a process per op and dtype, --jobs of them at once)

A kernel that spills its registers to local memory can run several times slower than the same
kernel without (a pre-mode backward at fp32 rows of 16384 columns took 10x its time until
2026-11-27), and nothing in the outputs shows it. For every op, dtype and dispatch entry of both
directions this calls the op as users call it at shapes inside the entry: its fewest rows, and one
row more where its row tiles take more than one row; its widest columns, and a width 8 narrower
(which takes the column mask where the entry's block is its widest column). It calls the forward
without gradients and with them (the training forward, which stores the statistics), and for the
backward's entries the backward. Each call's new compiled specializations are read back from
Triton's cache with their registers and spills (Triton's ``n_regs`` and ``n_spills``, from the
driver). Not covered: weights in another dtype than x (fp32 weight rows with 16-bit x), row strides
that lower the vector width (VEC), and torch.compile's launches (the same entries).

Exit status 1 when any specialization spills; the report (``spills.md``, ``spills.json`` under
--out) lists each with the entry and shape that launched it.

    python scripts/spills.py --ops OPS --compare BEFORE/spills.json [--out DIR]     # after a change
    python scripts/spills.py --compare BEFORE/spills.json --records AFTER/spills.json   # no GPU needed
    python scripts/spills.py --compare BEFORE/spills.json --records AFTER/spills.json --ops rmsnorm --dtypes bf16
    (either with --slack BYTES: growth up to that many bytes let pass)

With --compare (an audit of the tree before a change, the same --ops and --dtypes), the report adds
every specialization (an op and dtype's kernel with Triton's key, wherever the audit first compiled it)
that spills more than it did there, or spills where that audit had no such specialization, and the
exit status is 1 only when there is one: ptxas's register allocation moves with
small edits to device code (a change to the fp8 quotient once made add_rmsnorm_fp8's fp32 rows of
16385-32768 columns spill 158-430 bytes where they had spilled 26-78, and take up to 3.1x the time;
docs/bench/family/fp8-div.md). --records compares two saved audits without running one: only their records of
--ops and --dtypes where given (each must be in both audits).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DTYPES = ("fp32", "fp16", "bf16")


def shapes(entry) -> list[tuple[int, int]]:
    """(rows, cols) inside a dispatch entry: fewest rows (and one more for a row mask), widest and masked columns."""
    rows = [max(entry.rows_lo, 1)]
    if entry.block_m > 1 and (entry.rows_hi is None or rows[0] + 1 <= entry.rows_hi):
        rows.append(rows[0] + 1)
    widest = entry.cols_hi if entry.cols_hi is not None else 2 * (entry.cols_lo - 1)
    cols = [widest] + ([widest - 8] if widest - 8 >= entry.cols_lo else [])
    return [(r, c) for r in rows for c in cols]


def compiled(kernels) -> dict:
    """(kernel name, cache key) -> Triton's compiled kernel, for every specialization compiled so far."""
    found = {}
    for fn in kernels:
        for caches in fn.device_caches.values():
            for key, kernel in caches[0].items():
                found[(fn.__name__, str(key))] = kernel
    return found


def audit(op: str, dtypes: list[str], part: Path | None = None) -> list[dict]:
    """One record per compiled specialization of the op's kernels: where it was launched, regs and
    spills; each call's records are also appended to ``part`` (JSON lines) as they come."""
    import torch

    from benchmarks import backward, ops
    from dsl import device

    module = importlib.import_module(f"generated.{op}_cuda")
    spec = ops.OPS[op]
    tables = [("forward", module.LAUNCHER.table)]
    kernels = list(module.KERNELS.values())
    if hasattr(module, "BACKWARD_LAUNCHER"):
        tables.append(("backward", module.BACKWARD_LAUNCHER.table))
        kernels += list(module.BACKWARD_KERNELS.values()) + [device.sum_partials]
    records = []
    for direction, table in tables:
        for entry in table.entries:
            if entry.dtype not in dtypes:
                continue
            for rows, cols in shapes(entry):
                for mode in spec.modes:
                    before = compiled(kernels)
                    ((x, r, w, b),) = ops.make_inputs(op, rows, cols, entry.dtype, 1)
                    if direction == "forward":
                        with torch.no_grad():
                            ops.normgen_function(op, mode)(x, r, w, b)
                    if not spec.quant:
                        _, outs, _, grads = backward.prepare("normgen", op, mode, (x, r, w, b), 1)
                        if direction == "backward":
                            torch.autograd.backward(outs, grads)
                    torch.cuda.synchronize()
                    new = [
                        {
                            "op": op, "direction": direction, "dtype": entry.dtype, "mode": mode,
                            "entry": f"cols {entry.cols_lo}-{entry.cols_hi}, rows {entry.rows_lo}-{entry.rows_hi}, "
                            f"{entry.passes} {entry.grid}, BLOCK {entry.block_m}x{entry.block_n}, "
                            f"{entry.num_warps} warps, {entry.stages} stages",
                            "shape": f"{rows}x{cols}", "kernel": name, "key": key,
                            "warps": kernel.metadata.num_warps, "regs": kernel.n_regs, "spills": kernel.n_spills,
                        }
                        for (name, key), kernel in compiled(kernels).items()
                        if (name, key) not in before
                    ]  # fmt: skip
                    records += new
                    if part is not None and new:
                        with part.open("a") as f:
                            f.writelines(json.dumps(record) + "\n" for record in new)
                    del x, r, w, b
            torch.cuda.empty_cache()
    return records


def report(records: list[dict]) -> str:
    spilled = [r for r in records if r["spills"]]
    lines = [
        f"{len(records)} compiled specializations, {len(spilled)} spill registers",
        "",
        "| op | direction | dtype | mode | entry | shape | kernel | warps | regs | spills (bytes) |",
        "|---|---|---|---|---|---|---|--:|--:|--:|",
    ]
    for r in sorted(spilled, key=lambda r: -r["spills"]):
        lines.append(
            f"| {r['op']} | {r['direction']} | {r['dtype']} | {r['mode']} | {r['entry']} | {r['shape']} "
            f"| {r['kernel']} | {r['warps']} | {r['regs']} | {r['spills']} |"
        )
    return "\n".join(lines) + "\n"


def same_launch(record: dict) -> tuple:
    """What identifies a compiled specialization across two audits: the op and dtype audited, the kernel and
    Triton's key (its signature, constexprs and launch options). Not the call that first compiled it (its
    direction, mode and shape): that moves when an entry's range or the order of the calls does, with the
    same specialization compiled."""
    return tuple(record[k] for k in ("op", "dtype", "kernel", "key"))


def grown(before: list[dict], after: list[dict], slack: int = 0) -> list[tuple[dict, int | None]]:
    """(record, bytes before) of every specialization of ``after`` that spills more than it did in
    ``before``; bytes before None where ``before`` has no such specialization (a launch that changed)
    and it spills now; ``slack`` bytes more are let pass. Ops and dtypes that ``before`` did not audit are
    not compared."""
    was = {same_launch(r): r["spills"] for r in before}
    audited = {(r["op"], r["dtype"]) for r in before}
    result = []
    for r in after:
        if (r["op"], r["dtype"]) not in audited:
            continue
        old = was.get(same_launch(r))
        if (old is None and r["spills"] > slack) or (old is not None and r["spills"] > old + slack):
            result.append((r, old))
    return sorted(result, key=lambda pair: -(pair[0]["spills"] - (pair[1] or 0)))


def comparison(before: list[dict], after: list[dict], slack: int = 0) -> tuple[str, list]:
    """The comparison's report, and ``grown``'s rows (the exit status is 1 where there are any)."""
    rows = grown(before, after, slack)
    audited = {(r["op"], r["dtype"]) for r in before}
    compared = sum((r["op"], r["dtype"]) in audited for r in after)
    more = f" by over {slack} bytes" if slack else ""
    skipped = len(after) - compared
    apart = f"; {skipped} of ops and dtypes it did not audit, not compared" if skipped else ""
    lines = [
        f"against the audit before: {len(rows)} of {compared} specializations spill more{more} (or newly){apart}",
        "",
        "| op | direction | dtype | mode | entry | shape | kernel | spills before | spills now |",
        "|---|---|---|---|---|---|---|--:|--:|",
    ]
    for r, old in rows:
        lines.append(
            f"| {r['op']} | {r['direction']} | {r['dtype']} | {r['mode']} | {r['entry']} | {r['shape']} "
            f"| {r['kernel']} | {'-' if old is None else old} | {r['spills']} |"
        )
    return "\n".join(lines) + "\n", rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", help="comma-separated cuda ops, or all (the default)")
    parser.add_argument("--dtypes", help=f"comma-separated (default {','.join(DTYPES)})")
    parser.add_argument("--jobs", type=int, default=1, help="(op, dtype) pairs audited at once, one process each")
    parser.add_argument("--out", type=Path, help="folder for spills.md and spills.json")
    parser.add_argument("--part", type=Path, help=argparse.SUPPRESS)  # a worker: its records into this file
    parser.add_argument(
        "--compare", type=Path, help="an earlier audit's spills.json: list what spills more now (exit status 1)"
    )
    parser.add_argument(
        "--records", type=Path, help="with --compare: this audit's spills.json instead of running it (no GPU needed)"
    )
    parser.add_argument("--slack", type=int, help="with --compare: bytes more let pass (default 0)")
    args = parser.parse_args(argv)
    if (args.records or args.slack is not None) and not args.compare:
        parser.error("--records and --slack go with --compare")
    args.slack = 0 if args.slack is None else args.slack
    if args.slack < 0:
        parser.error("--slack is a number of bytes, at least 0")
    if args.compare and args.records:
        # two saved audits; --ops and --dtypes, where given, keep only those ops' and dtypes' records
        keep = {
            field: set(value.split(","))
            for field, value in (("op", args.ops), ("dtype", args.dtypes))
            if value not in (None, "all")
        }
        audits = []
        for path in (args.compare, args.records):
            records = json.loads(path.read_text())
            audits.append([r for r in records if all(r[field] in values for field, values in keep.items())])
            for field, values in keep.items():
                missing = values - {r[field] for r in records}
                if missing:
                    parser.error(f"{path} has no records of {field} {', '.join(sorted(missing))}")
        text, rows = comparison(*audits, args.slack)
        print(text)
        return 1 if rows else 0
    from benchmarks import ops

    names = list(ops.OPS) if args.ops in (None, "all") else args.ops.split(",")
    dtypes = (args.dtypes or ",".join(DTYPES)).split(",")
    if args.part:
        for op in names:
            audit(op, dtypes, args.part)
        return 0
    if args.jobs < 1:
        parser.error("--jobs is at least 1")
    # A process per (op, dtype) whatever --jobs is: a kernel the ops share (the backward's sum_partials)
    # is then compiled, and recorded, under every op and dtype that launches it, the same in any audit.
    parts = args.out / "parts" if args.out else Path(tempfile.mkdtemp())  # what a worker found so far
    parts.mkdir(parents=True, exist_ok=True)

    def worker(job):
        op, dtype = job
        found = parts / f"{op}-{dtype}"
        found.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--part", str(found), "--ops", op, "--dtypes", dtype]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{op} {dtype}: the audit failed:\n{done.stderr[-4000:]}")
        print(f"{op} {dtype}: audited", flush=True)
        return [json.loads(line) for line in found.read_text().splitlines()] if found.exists() else []

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        # the longest first: residual ops with a backward call twice as many (pre and post)
        jobs = sorted(((op, d) for op in names for d in dtypes), key=lambda j: -len(ops.OPS[j[0]].modes))
        records = [r for part in pool.map(worker, jobs) for r in part]
    text, rows = report(records), []
    if args.compare:
        more, rows = comparison(json.loads(args.compare.read_text()), records, args.slack)
        text += "\n" + more
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "spills.md").write_text(text)
        (args.out / "spills.json").write_text(json.dumps(records, indent=1))
    if args.compare:
        return 1 if rows else 0
    return 1 if any(r["spills"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
