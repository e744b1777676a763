"""Before and after: one checkout's ops against another's, alternated in separate processes (GPU machine).

    python -m benchmarks.ab BEFORE [--after DIR] [--ops add_rmsnorm_fp8,add_layernorm_fp8]
                            [--dtypes bf16,fp32] [--shapes family | 2048x8192,16384x4096]
                            [--modes pre,post] [--rounds 2] [--reps 5] [--out DIR]
    python -m benchmarks.ab --self-test [--out DIR]   # CPU: two fake runs of this checkout, the writers

BEFORE and --after (default: this checkout) are folders holding a checkout's dsl/, generated/ and
benchmarks/ (e.g. ``git worktree add /tmp/before REV``). Each round runs the before tree and then
the after tree, each in a process of its own with the tree as working directory and first on
sys.path, so that every process compiles and imports only its own kernels: normgen's device time
per case through that tree's ``benchmarks.bench.measure_case`` (CUDA-graph replay, rotated inputs,
outputs checked against the op's reference before timing). Comparing trees in one process would
mix their imports; timing one tree and then the other would take the machine's drift for the
change (a device's timings move by a few percent over minutes).

The shapes: ``family`` (the benchmark's family shapes; the default) or rows x columns, each in
every --dtypes (default bf16: the family benchmark's). Writes DIR/ab.md and DIR/ab.json (default
benchmarks/results/): per case every run's µs, after / before of each tree's best run among those
whose output checked, and whether any output differed; per op and dtype the range of ratios over the
cases whose every run ran and checked. Prints the markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results"
DTYPES = ("fp32", "fp16", "bf16")
MARK = "AB "  # a worker's result lines start with it (everything else a worker prints is passed on)

# Run in each tree (python -c, the tree as working directory): its own benchmarks.bench measures
# each case. FAKE (the self-test): on CPU, the interpreter's outputs checked, timings made up.
WORKER = """
import json, sys
cases, fake = json.loads(sys.argv[1]), sys.argv[2] == "1"
from benchmarks import bench, timing
from benchmarks.report import Case
if fake:
    bench.DEVICE = "cpu"
    copy, l2 = 3000.0, 50 * 2**20
    timing.graph_time_us = lambda fn, sets, calls, reps, min_ms=1.0: [1.0 + 0.01 * k for k in range(reps)]
else:
    copy, l2 = timing.copy_bandwidth()["gbps"], timing.l2_bytes()
reps = int(sys.argv[3])
for op, dtype, rows, cols, mode in cases:
    (row,) = bench.measure_case(Case(op, "ab", dtype, rows, cols, mode), ["normgen"], {}, reps, copy, l2)
    result = {"case": [op, dtype, rows, cols, mode], "us": row.us, "ok": row.ok, "error": row.error}
    print("AB " + json.dumps(result), flush=True)
"""


def parse_shapes(text: str) -> list[tuple[int, int]] | str:
    if text == "family":
        return text
    shapes = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        rows, sep, cols = item.partition("x")
        if not (sep and rows.isdigit() and cols.isdigit() and int(rows) > 0 and int(cols) > 0):
            raise argparse.ArgumentTypeError(f"a shape is ROWSxCOLS with both at least 1, got {item!r}")
        shapes.append((int(rows), int(cols)))
    if not shapes:
        raise argparse.ArgumentTypeError("--shapes names no shape")
    return list(dict.fromkeys(shapes))  # a shape named twice is one case


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from benchmarks.bench import split_list
    from benchmarks.ops import OPS

    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("before", nargs="?", type=Path, help="the checkout before the change")
    add("--after", type=Path, default=ROOT, help="the checkout after it (default: this one)")
    add("--ops", type=lambda t: split_list(t, tuple(OPS), "op"), help="ops to measure (default: every shipped op)")
    add("--dtypes", default="bf16", type=lambda t: split_list(t, DTYPES, "dtype"), help="default bf16")
    add("--shapes", default="family", type=parse_shapes, help="family (default) or ROWSxCOLS,...")
    add("--modes", default="pre,post", type=lambda t: split_list(t, ("pre", "post"), "mode"), help="default pre,post")
    add("--rounds", type=int, default=2, help="rounds, each a run of both trees (default 2)")
    add("--reps", type=int, default=5, help="timed repeats per measurement in each run (default 5)")
    add("--out", type=Path, help="folder for ab.md and ab.json (default benchmarks/results)")
    add("--self-test", action="store_true", help="CPU: this checkout against itself on fake timings")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.reps < 1:
        parser.error("--rounds and --reps must be at least 1")
    if not args.dtypes or not args.modes or args.ops == []:
        parser.error("--dtypes, --modes and --ops name one at least")
    if not args.self_test:
        if args.before is None:
            parser.error("name the checkout before the change (BEFORE)")
        for tree in (args.before, args.after):
            if not (tree / "benchmarks" / "bench.py").is_file() or not (tree / "generated").is_dir():
                parser.error(f"{tree} holds no checkout (benchmarks/bench.py and generated/)")
        if args.before.resolve() == args.after.resolve():
            parser.error("BEFORE and --after are the same folder")
    return args


def case_list(ops: list[str], dtypes: list[str], shapes, modes: list[str]) -> list[list]:
    from benchmarks import bench
    from benchmarks.ops import modes_of

    if shapes == "family":
        shapes = [(rows, cols) for _, rows, cols in bench.group_shapes("family", quick=False)]
    return [
        [op, dtype, rows, cols, mode]
        for op in ops
        for dtype in dtypes
        for rows, cols in shapes
        for mode in modes_of(op, modes)
    ]


def run_tree(tree: Path, cases: list[list], reps: int, fake: bool) -> dict[tuple, dict]:
    """One process in ``tree``: case -> {us, ok, error}; a case the process did not report (it died)
    comes back with the process's last lines as its error."""
    # the tree first on the path, before what the caller's path holds (e.g. a folder of wheels' packages);
    # absolute, since the worker runs in the tree (a relative one would name a folder inside it)
    tree = tree.resolve()
    path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")
    if fake:
        env["TRITON_INTERPRET"] = "1"
    command = [sys.executable, "-c", WORKER, json.dumps(cases), "1" if fake else "0", str(reps)]
    proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    results, other = {}, []
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            result = json.loads(line[len(MARK) :])
            results[tuple(result.pop("case"))] = result
        else:
            other.append(line)
    if other:
        print("\n".join(other), file=sys.stderr)
    if proc.returncode != 0 or len(results) < len(cases):
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        for case in map(tuple, cases):
            results.setdefault(case, {"us": None, "ok": None, "error": f"the run stopped: {why}"})
    return results


def compare(runs: dict[str, list[dict]], cases: list[list]) -> list[dict]:
    """Per case: every run's µs per tree; after / before of each tree's best run among those whose
    output checked (None where a tree has none); whether every run's output checked, whether any
    differed from the reference (_wrong), and the first run's error that stopped it."""
    rows = []
    for case in map(tuple, cases):
        row = {"case": list(case)}
        best = {}
        for tree in ("before", "after"):
            got = [run[case] for run in runs[tree]]
            row[tree] = [r["us"] for r in got]
            row[tree + "_ok"] = all(r["ok"] is True for r in got)
            row[tree + "_wrong"] = any(r["ok"] is False for r in got)
            row[tree + "_error"] = next((r["error"] for r in got if r["error"]), None)
            best[tree] = min((r["us"] for r in got if r["ok"] is True and r["us"]), default=None)
        row["ratio"] = best["after"] / best["before"] if best["before"] and best["after"] else None
        rows.append(row)
    return rows


def clean(row: dict) -> bool:
    """Every run of both trees ran and its output checked: the case counts in the summary."""
    return row["ratio"] is not None and row["before_ok"] and row["after_ok"]


def markdown(meta: dict, rows: list[dict]) -> str:
    def runs(values):
        return ", ".join("-" if v is None else f"{v:.2f}" for v in values)

    lines = [
        "# Before and after",
        "",
        f"- date (UTC): {meta['date']}; device: {meta['device']}",
        f"- before: {meta['before']}; after: {meta['after']}; {meta['rounds']} rounds, before then after "
        f"in odd rounds, after then before in even ones, a process per tree and round; {meta['reps']} repeats "
        "per measurement",
        "- µs: normgen's device time per call (CUDA-graph replay, median of the repeats); ratio: after / "
        "before of each tree's best run whose output checked (below 1 is faster); ✗: an output differed "
        "from the op's reference; the summary's lowest and highest leave out every case with a ✗ or a "
        "run that stopped (its last column counts them)",
        "",
        "| op | dtype | rows × cols | mode | before µs | after µs | after / before |",
        "|---|---|---|---|--:|--:|--:|",
    ]
    for row in rows:
        op, dtype, r, c, mode = row["case"]
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        flags = "".join(f" ✗ {tree}" for tree in ("before", "after") if row[tree + "_wrong"])
        errors = "".join(f" ({tree}: {row[tree + '_error']})" for tree in ("before", "after") if row[tree + "_error"])
        before, after = runs(row["before"]), runs(row["after"])
        lines.append(f"| {op} | {dtype} | {r} × {c} | {mode} | {before} | {after} | {ratio}{flags}{errors} |")
    lines += [
        "",
        "| op | dtype | cases | after / before: lowest | highest | left out (✗ or stopped) |",
        "|---|---|--:|--:|--:|--:|",
    ]
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault((row["case"][0], row["case"][1]), []).append(row)
    for (op, dtype), group in groups.items():
        timed = [row["ratio"] for row in group if clean(row)]
        low, high = (f"{min(timed):.3f}", f"{max(timed):.3f}") if timed else ("-", "-")
        lines.append(f"| {op} | {dtype} | {len(group)} | {low} | {high} | {len(group) - len(timed)} |")
    return "\n".join(lines) + "\n"


def round_order(round_: int, before: Path, after: Path) -> list[tuple[str, Path]]:
    """The trees in round ``round_`` (from 0): before first in odd rounds (1st, 3rd, ...), after first in
    even ones, so that neither always runs second (a warmer device, say, would be taken for the change)."""
    order = [("before", before), ("after", after)]
    return order[::-1] if round_ % 2 else order


def run(args: argparse.Namespace, fake: bool = False) -> tuple[str, list[dict]]:
    from benchmarks.ops import OPS

    ops = args.ops or list(OPS)
    cases = case_list(ops, args.dtypes, args.shapes, args.modes)
    before = args.before if args.before is not None else args.after
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for round_ in range(args.rounds):
        for tree, path in round_order(round_, before, args.after):
            print(f"round {round_ + 1}: {tree} ({path}), {len(cases)} cases", file=sys.stderr, flush=True)
            runs[tree].append(run_tree(path, cases, args.reps, fake))
    rows = compare(runs, cases)
    device = "cpu (fake timings)" if fake else _device_name()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    meta = {"date": now, "device": device, "before": str(before), "after": str(args.after)}
    meta |= {"rounds": args.rounds, "reps": args.reps}
    text = markdown(meta, rows)
    out = args.out or DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    (out / "ab.md").write_text(text, encoding="utf-8")
    (out / "ab.json").write_text(json.dumps({"meta": meta, "cases": rows}, indent=1), encoding="utf-8")
    return text, rows


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"


def self_test(out: Path | None) -> int:
    """This checkout against itself on CPU with fake timings: the worker, the rounds, the writers, a
    refused argument, and a run that dies reported per case."""
    with tempfile.TemporaryDirectory() as tmp:
        # (one round: each round is a process per tree, about 10 s of CPU here; compare's runs are checked below)
        argv = ["--self-test", "--ops", "add_rmsnorm,layernorm", "--shapes", "2x64", "--modes", "post", "--rounds", "1"]
        args = parse_args(argv)
        args.out = out or Path(tmp)
        text, rows = run(args, fake=True)
        cases = {tuple(row["case"]) for row in rows}
        assert cases == {("add_rmsnorm", "bf16", 2, 64, "post"), ("layernorm", "bf16", 2, 64, "-")}, cases
        for row in rows:
            assert len(row["before"]) == len(row["after"]) == 1 and row["before_ok"] and row["after_ok"], row
            assert row["ratio"] == 1.0, row  # the same tree, the same fake timings
        assert (args.out / "ab.json").is_file() and "| add_rmsnorm | bf16 | 2 × 64 | post |" in text
        # a tree whose worker dies: every case reported with why
        dead = Path(tmp) / "dead"
        (dead / "benchmarks").mkdir(parents=True)
        (dead / "benchmarks" / "__init__.py").write_text("raise SystemExit('no benchmarks here')\n")
        results = run_tree(dead, [["add_rmsnorm", "bf16", 2, 64, "post"]], 1, fake=True)
        assert results[("add_rmsnorm", "bf16", 2, 64, "post")]["error"].startswith("the run stopped"), results
    # compare: the best run of each tree among those whose output checked, an output that differed
    # (its faster run takes no part), a run that failed, both in one tree; the summary leaves them out
    cases = [("rmsnorm", "bf16", rows, 8, "-") for rows in (4, 8, 16, 32)]
    good = {"us": 10.0, "ok": True, "error": None}
    failed = {"us": None, "ok": None, "error": "boom"}
    wrong = dict(good, us=5.0, ok=False)
    first = {"before": [good, good, dict(wrong, us=10.0), good], "after": [dict(good, us=12.0), good, good, good]}
    second = {"before": [dict(good, us=11.0), good, failed, good], "after": [wrong, failed, good, dict(good, us=8.0)]}
    runs = {tree: [dict(zip(cases, run[tree], strict=True)) for run in (first, second)] for tree in ("before", "after")}
    rows = compare(runs, [list(case) for case in cases])
    ratios = [row["ratio"] for row in rows]
    assert ratios == [1.2, 1.0, None, 0.8], rows  # 12 / 10 (not 5 / 10), 10 / 10, no run of before checked
    assert rows[0]["after_wrong"] and not rows[0]["after_ok"] and not rows[0]["after_error"], rows[0]
    assert rows[1]["after_error"] == "boom" and rows[1]["after"] == [10.0, None] and not rows[1]["after_wrong"]
    assert rows[2]["before_wrong"] and rows[2]["before_error"] == "boom", rows[2]
    meta = {"date": "", "device": "", "before": "", "after": "", "rounds": 2, "reps": 1}
    text2 = markdown(meta, rows)
    assert "| 12.00, 5.00 | 1.200 ✗ after |" in text2 and "| 10.00, - | 1.000 (after: boom) |" in text2, text2
    assert "| 10.00, - | 10.00, 10.00 | - ✗ before (before: boom) |" in text2, text2
    assert "| rmsnorm | bf16 | 4 | 0.800 | 0.800 | 3 |" in text2, text2  # only the clean case
    assert [t for t, _ in round_order(0, Path("b"), Path("a"))] == ["before", "after"]
    assert [t for t, _ in round_order(1, Path("b"), Path("a"))] == ["after", "before"]
    assert parse_shapes("2x64, 2x64,3x8") == [(2, 64), (3, 8)]
    for bad in (["--shapes", "2x"], ["--dtypes", "fp64"], ["--rounds", "0"]):
        try:
            parse_args(["--self-test", *bad])
        except SystemExit:
            continue
        raise AssertionError(f"{bad} was not refused")
    print(text)
    print("self-test passed")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.self_test:
        return self_test(args.out)
    text, _ = run(args)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
