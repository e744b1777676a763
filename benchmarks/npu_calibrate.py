"""Fit the npu planner's unified-buffer model (``dsl/targets/npu_ub.py``, ``FAMILIES``) to Ascend's compiler.

    python -m benchmarks.npu_calibrate --survey [--ops a,b] [--passes P] [--mode M]
                                                              plan tiles, append to docs/npu/ub-survey.jsonl
    python -m benchmarks.npu_calibrate --from-ub-plan         append docs/npu/ub-plan.md's plans to the survey
    python -m benchmarks.npu_calibrate --wide [--ops a,b]     plan single-pass tiles wider than 2048, append
    python -m benchmarks.npu_calibrate                        fit the survey, print FAMILIES

Runs in the triton-ascend venv (``bash scripts/npu_env.sh``). The survey lowers,
per op, dtype, pass, row block and residual mode of the op's current npu table,
the narrowest, a middle and the widest column block (masks on; every optional
input and store on), and plans each with ``bishengir-compile`` twice, with and
without multi-buffering (``benchmarks/npu_compiler.py``). A line per kernel:
the tile, both verdicts and UB figures, and the bytes the compiler says it
would need when it overflows ("requires N bits").

The fit, per kernel family (quantized output, layer norm, residual, 16-bit input,
pass), of ``bytes = per_element * rows * cols + per_column * cols + fixed`` over a
grid of (per_element, per_column):

* ``least`` (the fit criterion): at or below every plan the compiler made
  without multi-buffering, at or above every "requires" figure, and above the
  buffer where the compiler fell back; of those lines the highest over the
  surveyed tiles and the largest a table may hold (``REACH``): the most
  conservative, and the steepest beyond what the survey saw.
* ``plenty`` / ``plenty_multibuffer`` (the most the compiler plans): at or above
  every plan without / with multi-buffering, above the buffer where the compiler
  fell back with it on; the lowest such line.

Tiles the survey did not plan are checked by CI (``tests/test_npu_lowering.py``).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SURVEY = ROOT / "docs" / "npu" / "ub-survey.jsonl"
UB = 192 * 1024


def _plan_both(lowering):
    import shutil

    from benchmarks import npu_compiler as compiler

    error, ttadapter = compiler.lower(lowering)
    for _ in range(3):
        if not (error and "PLEASE submit a bug report" in error):
            break
        error, ttadapter = compiler.lower(lowering)
    if error:
        return error, None
    found = {}
    for multibuffer in (True, False):
        plan = compiler.plan_memory(ttadapter, multibuffer, timeout=20)  # a timeout: retries after an overflow
        found["on" if multibuffer else "off"] = (plan.verdict, plan.ub_bytes, plan.detail[:200])
        shutil.rmtree(ttadapter.parent / "bishengir", ignore_errors=True)
    return None, found


def survey(ops: list[str], out: Path, passes: str | None = None, pre: bool | None = None) -> None:
    import concurrent.futures
    import multiprocessing
    import os
    import tempfile

    from benchmarks import npu_compiler as compiler
    from benchmarks.npu_cost import npu_ops

    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("NORMGEN_INTERPRET_TARGET", "npu")
    for op in npu_ops(ops):
        lowerings, _, _ = compiler.plan_lowerings(op)
        groups: dict[tuple, dict[int, tuple]] = collections.defaultdict(dict)
        for lowering, entry in lowerings.items():
            c = dict(lowering.constants)
            if (passes and entry.passes != passes) or (pre is not None and c.get("PRE") is not pre):
                continue
            switches = tuple(
                (k, v) for k, v in lowering.constants if k.isupper() and not k.startswith(("BLOCK", "EVEN"))
            )
            group = (entry.dtype, entry.passes, c["BLOCK_M"], switches)
            score = (not c["EVEN_M"]) + (not c["EVEN_N"])
            old = groups[group].get(c["BLOCK_N"])
            if old is None or score > old[0]:
                groups[group][c["BLOCK_N"]] = (score, lowering, entry)
        chosen = []
        for by_width in groups.values():
            widths = sorted(by_width)
            for i in sorted({0, len(widths) // 2, len(widths) - 1}):
                chosen.append(by_width[widths[i]][1:])
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            2, mp_context=context, initializer=compiler.start_worker, initargs=(tempfile.mkdtemp(),)
        ) as pool:
            results = list(pool.map(_plan_both, [lowering for lowering, _ in chosen]))
        with out.open("a") as file:
            for (lowering, entry), (error, plans) in zip(chosen, results, strict=True):
                c = dict(lowering.constants)
                line = dict(op=op, dtype=entry.dtype, passes=entry.passes, rows=c["BLOCK_M"], cols=c["BLOCK_N"])
                line.update(pre=c.get("PRE"), error=error and error[:200], **(plans or {}))
                file.write(json.dumps(line) + "\n")
        print(f"{op}: {len(chosen)} kernels planned", file=sys.stderr)


# Single-pass tiles wider than the seed's 2048 columns (the candidates of dsl/tuning/npu.json).
WIDE_TILES = ((1, 3072), (4, 3072), (1, 4096), (2, 4096), (4, 4096), (1, 6144), (2, 6144), (1, 8192), (2, 8192))
# The tiles a table may hold besides the surveyed ones (the least line is the highest over them all);
# the unquantized kernels' tables hold single-pass tiles wider than 2048 too (dsl/tuning/npu.json).
REACH = ((1, 2048), (4, 2048), (8, 2048), (16, 2048), (16, 1024), (32, 128), (32, 512))


def wide_survey(ops: list[str], out: Path, tiles=WIDE_TILES) -> None:
    """Plan single-pass tiles wider than 2048 columns: each op's widest single-pass kernel (masks on,
    every switch and residual mode) with its BLOCK_M and BLOCK_N replaced by each of ``tiles``."""
    import concurrent.futures
    import multiprocessing
    import os
    import tempfile

    from benchmarks import npu_compiler as compiler
    from benchmarks.npu_cost import npu_ops

    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("NORMGEN_INTERPRET_TARGET", "npu")
    chosen = []
    for op in npu_ops(ops):
        lowerings, _, _ = compiler.plan_lowerings(op)
        widest: dict[tuple, tuple] = {}
        for lowering, entry in lowerings.items():
            c = dict(lowering.constants)
            if entry.passes != "single" or c["EVEN_M"] or c["EVEN_N"]:
                continue
            group = (entry.dtype, c.get("PRE"))
            if group not in widest or c["BLOCK_N"] > widest[group][0]:
                widest[group] = (c["BLOCK_N"], lowering)
        for (dtype, pre), (_, lowering) in sorted(widest.items(), key=str):
            for rows, cols in tiles:
                c = dict(lowering.constants) | {"BLOCK_M": rows, "BLOCK_N": cols}
                chosen.append(((op, dtype, rows, cols, pre), lowering._replace(constants=tuple(c.items()))))
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        2, mp_context=context, initializer=compiler.start_worker, initargs=(tempfile.mkdtemp(),)
    ) as pool:
        results = list(pool.map(_plan_both, [lowering for _, lowering in chosen]))
    with out.open("a") as file:
        for ((op, dtype, rows, cols, pre), _), (error, plans) in zip(chosen, results, strict=True):
            line = dict(op=op, dtype=dtype, passes="single", rows=rows, cols=cols, pre=pre)
            line.update(error=error and error[:200], **(plans or {}))
            file.write(json.dumps(line) + "\n")
    print(f"{len(chosen)} wide single-pass kernels planned", file=sys.stderr)


def from_ub_plan(out: Path) -> int:
    """Append docs/npu/ub-plan.md's plans (CI's representatives, one multi-buffer setting each) to the survey."""
    from benchmarks.npu_cost import UB_PLAN

    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| (\d+) \| [^|]+ \| ([^|]+) \|", UB_PLAN.read_text(), re.MULTILINE)
    seen = set(out.read_text().splitlines()) if out.is_file() else set()
    with out.open("a") as file:
        for key, _model, compiled, verdict in rows:
            if key.endswith(" w=fp32"):  # fp32 weight rows: not fitted, counted apart (npu_ub.py, FP32_PARAM_ROW)
                continue
            op, dtype, passes, tile, multibuffer, mode = key.split()
            rows_, cols = tile.split("x")
            line = dict(op=op, dtype=dtype, passes=passes, rows=int(rows_), cols=int(cols))
            line.update(pre={"pre": True, "post": False}.get(mode), error=None)
            verdict, _, detail = verdict.strip().partition(": ")
            line[multibuffer.removeprefix("mb=")] = [verdict, int(compiled), detail]
            text = json.dumps(line)
            if text not in seen:  # a plan already surveyed: once
                seen.add(text)
                file.write(text + "\n")
    return len(rows)


def family_key(op: str, dtype: str, passes: str) -> tuple:
    from dsl import pipeline
    from dsl.model import Quantize

    (spec,) = [s for s in pipeline.load_specs(pipeline.SPECS) if s.name == op]
    quant = spec.quantize.value if spec.quantize is not Quantize.NONE else "none"
    return (quant, spec.is_layer, spec.has_residual, dtype != "fp32", passes)


def fit(survey_file: Path) -> dict:
    import numpy as np

    points = collections.defaultdict(lambda: collections.defaultdict(list))
    for text in survey_file.read_text().splitlines():
        line = json.loads(text)
        if line["error"]:
            continue
        key = family_key(line["op"], line["dtype"], line["passes"])
        tile = (line["rows"], line["cols"])
        for mb in ("on", "off"):
            if mb not in line:  # a CI plan (docs/npu/ub-plan.md): one setting only
                continue
            verdict, ub, detail = line[mb]
            required = re.search(r"requires (\d+) bits", detail)
            if verdict == "ok":
                points[key][mb].append((*tile, ub))
            else:
                points[key][mb + "_over"].append((*tile, UB + 1))
            if required:
                points[key]["least_over"].append((*tile, int(required.group(1)) // 8))
            elif verdict == "fallback" and mb == "off":
                points[key]["least_over"].append((*tile, UB + 1))
    per_element = np.arange(0, 80.01, 0.25)[:, None]
    per_column = np.arange(0, 1500.1, 1.0)[None, :]

    def columns(found):
        a = np.array(found, float).reshape(-1, 3)
        return a[:, 0] * a[:, 1], a[:, 1], a[:, 2]

    def lines(found):
        tile, cols, value = columns(found)
        return per_element[..., None] * tile + per_column[..., None] * cols, value

    def highest_below(below, above, reach_tiles=REACH):
        if not below:  # no plan fitted: the lowest line through what the compiler said it needs
            return lowest_above(above, [])
        base, value = lines(below)
        fixed = (value - base).min(-1)
        base_over, value_over = lines(above) if above else (base[..., :0], value[:0])
        feasible = (base_over + fixed[..., None] >= value_over).all(-1)
        # Of the feasible lines, the one highest over the tiles a table can hold (up to 16 rows
        # of 2048 and 32 of 128) besides the surveyed ones: beyond the survey, the steepest guess.
        reach, _ = lines([(rows, cols, 0) for rows, cols in reach_tiles] + list(below) + list(above))
        score = np.where(feasible, (reach + fixed[..., None]).sum(-1), -np.inf)
        i, j = np.unravel_index(np.argmax(score), score.shape)
        return float(per_element[i, 0]), float(per_column[0, j]), int(np.floor(fixed[i, j]))

    def lowest_above(above, over):
        if not above:
            return None
        base, value = lines(above)
        fixed = np.maximum((value - base).max(-1), 0)
        # ties (points of one column block cannot tell per-column from fixed bytes): the least fixed
        slack = (base + fixed[..., None] - value).sum(-1) + 1e-3 * fixed
        base_over, value_over = lines(over) if over else (base[..., :0], value[:0])
        slack = np.where((base_over + fixed[..., None] >= value_over).all(-1), slack, np.inf)
        i, j = np.unravel_index(np.argmin(slack), slack.shape)
        return float(per_element[i, 0]), float(per_column[0, j]), int(np.ceil(fixed[i, j]))

    # Quantized kernels: no plenty figures (dsl/targets/npu_ub.py says why).
    return {
        key: (
            highest_below(
                p["off"], p["least_over"], REACH + (WIDE_TILES if key[0] == "none" and key[4] == "single" else ())
            ),
            None if key[0] != "none" else lowest_above(p["off"], p["off_over"]),
            None if key[0] != "none" else lowest_above(p["on"], p["on_over"]),
        )
        for key, p in sorted(points.items(), key=str)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--survey", action="store_true", help="plan tiles of the current tables (appends)")
    parser.add_argument("--from-ub-plan", action="store_true", help="append docs/npu/ub-plan.md to the survey")
    parser.add_argument("--wide", action="store_true", help="plan single-pass tiles wider than 2048 (appends)")
    parser.add_argument("--passes", choices=["single", "multi"], help="--survey: only this pass's kernels")
    parser.add_argument("--mode", choices=["pre", "post"], help="--survey: only this residual mode's kernels")
    parser.add_argument("--ops", help="comma-separated ops (default: every shipped op with the npu target)")
    parser.add_argument("--file", type=Path, default=SURVEY)
    args = parser.parse_args(argv)
    if args.survey:
        pre = {"pre": True, "post": False}.get(args.mode or "")
        survey(args.ops.split(",") if args.ops else None, args.file, args.passes, pre)
        return 0
    if args.wide:
        wide_survey(args.ops.split(",") if args.ops else None, args.file)
        return 0
    if args.from_ub_plan:
        print(f"{from_ub_plan(args.file)} plans appended to {args.file}", file=sys.stderr)
        return 0

    def figures(found):
        return "None" if found is None else f"Bytes({found[0]}, {found[1]}, {found[2]})"

    print("FAMILIES: dict[tuple[str, bool, bool, bool, Pass], Family] = {")
    for (quant, layer, residual, narrow, passes), found in fit(args.file).items():
        key = f"({quant!r}, {layer}, {residual}, {narrow}, Pass.{passes.upper()})"
        print(f"    {key}: Family({', '.join(figures(f) for f in found)}),")
    print("}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
