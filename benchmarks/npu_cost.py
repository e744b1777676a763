"""Static cost of the npu kernels, read from Ascend's own memory plan (no NPU needed).

    python -m benchmarks.npu_cost                 docs/npu/cost.md: the seed's shapes, every op
    python -m benchmarks.npu_cost --ub-plan       docs/npu/ub-plan.md: model vs compiler per entry
    python -m benchmarks.npu_cost --ops add_rmsnorm --out DIR

Runs in the triton-ascend venv (``bash scripts/npu_env.sh`` builds it with
``ascendnpu-ir``). Each kernel is lowered by triton-ascend and planned by
``bishengir-compile`` with the A2 options (``benchmarks/npu_compiler.py``); the
numbers come from the IR after ``hivm-plan-memory``:

* GM bytes per element: the bytes of every ``hivm.hir.load`` / ``store`` of the
  steady-state loops (those that move a row tile), over the tile's elements.
  Per-row statistics (rstd, mean, scale) and the weight and bias rows, loaded
  once per program or once per column block, are left out: per element they
  vanish with the width or the row count.
* GM accesses per element: how many tile loads and stores those loops issue.
* vector ops per element: the ``hivm.hir.v*`` operations of those loops, each a
  sweep of the vector unit over the tile (casts counted apart too).
* UB bytes: the highest unified-buffer byte the plan uses; multi-buffer: the
  entry's setting (what the launcher passes).
* minimum: read x (and r) once, write y (and s, or the quantized op's residual
  out) once: ``benchmarks/ops.py``'s ``bytes_moved`` without the weight rows.

Speed on hardware is not measured here: no NPU runs anything.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import importlib
import multiprocessing
import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UB_PLAN = ROOT / "docs" / "npu" / "ub-plan.md"
COST = ROOT / "docs" / "npu" / "cost.md"
# The seed PR's measured shapes (shared/seed/npu-add-rmsnorm-pr.txt), and the width 4096 at 8 rows.
SEED_SHAPES = ((8, 8192), (16, 4096), (32, 128), (32, 2048), (128, 128), (128, 2048), (256, 512), (1024, 1024))
# Wider than any single-pass tile: the column loop (the seed's multi-pass kernel's structure).
WIDE_SHAPES = ((8, 16384),)


# ----------------------------------------------------------------------------
# Which kernels CI plans (tests/test_npu_lowering.py), and the committed figures


def _group(lowering) -> tuple:
    """A memory layout: everything in the kernel's text that sizes a buffer but the column block.

    BLOCK_N is left out (the plan of a wider tile holds every buffer of a narrower
    one, each bigger: see the group maxima in docs/npu/ub-plan.md); so are the masks
    and the grid (EVEN_M, EVEN_N, PERSISTENT add or drop a select or a loop bound,
    never a tile buffer)."""
    constants = tuple((k, v) for k, v in lowering.constants if k not in ("BLOCK_N", "EVEN_M", "EVEN_N", "PERSISTENT"))
    return (lowering.module, lowering.key, dict(lowering.signature)["X_ptr"], constants, lowering.multibuffer)


def representatives(lowerings: dict) -> set:
    """The kernels to plan: per memory layout (``_group``), the widest column block, with its masks on
    where the entry has a masked shape. Every other kernel of the group plans a subset of its buffers,
    each no bigger, so the representative's fit covers the group."""
    best: dict[tuple, tuple] = {}
    for lowering in lowerings:
        constants = dict(lowering.constants)
        score = (constants["BLOCK_N"], not constants["EVEN_N"], not constants["EVEN_M"])
        group = _group(lowering)
        if group not in best or score > best[group][0]:
            best[group] = (score, lowering)
    return {lowering for _, lowering in best.values()}


def planned(lowerings: dict) -> dict:
    """The kernels CI plans, each with its dispatch entry: the representatives and, where x is 16-bit,
    each again with fp32 weight and bias rows (the mixed-precision call, which the same entry serves:
    its ``ub_bytes`` must cover both)."""
    from benchmarks import npu_compiler as compiler

    chosen = {}
    for lowering in representatives(lowerings):
        chosen[lowering] = lowerings[lowering]
        variant = compiler.with_fp32_params(lowering)
        if variant is not None:
            chosen[variant] = lowerings[lowering]
    return chosen


def plan_key(lowering, entry) -> str:
    """A representative's row key in docs/npu/ub-plan.md (`` w=fp32``: with fp32 weight and bias rows)."""
    op = lowering.module.rsplit(".", 1)[1].removesuffix("_npu")
    constants = dict(lowering.constants)
    mode = {True: "pre", False: "post"}.get(constants.get("PRE"), "-")
    if "PRE" not in constants and op.startswith(("add_", "gemma_add_")):
        mode = "pre" if "RES_ptr" in dict(lowering.signature) else "post"
    tile = f"{constants['BLOCK_M']}x{constants['BLOCK_N']}"
    signature = dict(lowering.signature)
    params = " w=fp32" if signature.get("W_ptr") == "*fp32" != signature["X_ptr"] else ""
    return f"{op} {entry.dtype} {entry.passes} {tile} mb={'on' if lowering.multibuffer else 'off'} {mode}{params}"


_ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \| (\d+) \|")


def read_ub_plan(path: Path = UB_PLAN) -> dict[str, tuple[int, int]]:
    """docs/npu/ub-plan.md's representatives: key -> (model bytes, compiler bytes)."""
    if not path.is_file():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            found[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    return found


# ----------------------------------------------------------------------------
# Compiling (worker processes)


def _lower_and_plan(lowering):
    from benchmarks import npu_compiler as compiler

    error, ttadapter = compiler.lower(lowering)
    for _ in range(3):  # triton-adapter-opt's occasional crash (see tests/test_npu_lowering.py)
        if not (error and "PLEASE submit a bug report" in error):
            break
        error, ttadapter = compiler.lower(lowering)
    if error:
        return error, None
    return None, compiler.plan_memory(ttadapter, lowering.multibuffer)


def compile_all(lowerings: list) -> list:
    from benchmarks import npu_compiler as compiler

    root = tempfile.mkdtemp(prefix="npu-cost-")
    context = multiprocessing.get_context("spawn")
    workers = min(2, os.cpu_count() or 1)
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=compiler.start_worker, initargs=(root,)
    ) as pool:
        return list(pool.map(_lower_and_plan, lowerings))


def npu_ops(names: list[str] | None) -> list[str]:
    from dsl import pipeline
    from dsl.model import Target

    ops = [spec.name for spec in pipeline.load_specs(pipeline.SPECS) if Target.NPU in spec.targets]
    return [op for op in ops if not names or op in names]


# ----------------------------------------------------------------------------
# docs/npu/ub-plan.md


def write_ub_plan(ops: list[str], out: Path) -> int:
    from benchmarks import npu_compiler as compiler

    rows, failures = [], 0
    for op in ops:
        lowerings, _, _ = compiler.plan_lowerings(op)
        kernels = planned(lowerings)
        chosen = sorted(kernels, key=lambda low: plan_key(low, kernels[low]))
        for lowering, (error, plan) in zip(chosen, compile_all(chosen), strict=True):
            entry = kernels[lowering]
            key = plan_key(lowering, entry)
            if error or plan.verdict != "ok":
                failures += 1
                print(f"{key}: {error or plan.verdict + ': ' + plan.detail}", file=sys.stderr)
            compiled = plan.ub_bytes if plan else 0
            verdict = "lowering failed" if error else plan.verdict
            if plan and plan.verdict != "ok":
                verdict += f": {plan.detail.splitlines()[0][:120]}".replace("|", "/")
            covered = sum(1 for low in lowerings if _group(low) == _group(lowering))
            rows.append(
                f"| `{key}` | {entry.ub_bytes} | {compiled} | {entry.ub_bytes - compiled:+d} | {verdict} | {covered} |"
            )
        print(f"{op}: {len(chosen)} representatives planned", file=sys.stderr)
    # Rows of the ops not planned this time stay as they were.
    if out.is_file():
        kept = [line for line in out.read_text().splitlines() if _ROW.match(line)]
        rows += [line for line in kept if _ROW.match(line).group(1).split()[0] not in ops]
    rows.sort(key=lambda line: _ROW.match(line).group(1))
    text = UB_PLAN_HEADER.format(date=datetime.date.today().isoformat()) + "\n".join(rows) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return failures


UB_PLAN_HEADER = """\
# npu: the planner's unified-buffer model against Ascend's compiler

Written by `python -m benchmarks.npu_cost --ub-plan` (triton-ascend 3.2.0,
ascendnpu-ir 1.2.0's `bishengir-compile`, A2 options, `--target=Ascend910B4`;
{date}). CI (`tests/test_npu_lowering.py`, in `bash scripts/npu_checks.sh`)
plans the same kernels and fails when a figure here goes stale, when the
compiler falls back or overflows, or when the model counts less than the
compiler plans.

One row per representative kernel: per op, dtype, pass, row block, multi-buffer
setting and residual mode (every optional input and store on), the widest column
block, masks on where the entry has masked shapes; with 16-bit x, each again
with fp32 weight and bias rows (`w=fp32`: the mixed-precision call, which the
same entry serves, so its model counts those rows always). The kernels it covers
(last column: lowerings of the same layout with narrower column blocks, other
masks or grid) plan a subset of its buffers, each no bigger. `model`: the
entry's `ub_bytes` (`dsl/targets/npu_ub.py`, `ub_bytes`: the multi-buffered copies
counted where the entry turns multi-buffering on), which the planner budgets
against the 196608-byte unified buffer; `compiler`: the highest UB byte of the
plan after `hivm-plan-memory`. The model must never be lower.

| kernel (op dtype pass tile multi-buffer mode) | model | compiler | model − compiler | verdict | kernels covered |
|---|---|---|---|---|---|
"""


# ----------------------------------------------------------------------------
# docs/npu/cost.md


def tile_args(module) -> set[int]:
    """The kernel function's argument numbers in the planned IR of the row-tiled tensors (those with a
    row stride: x, r, y, the residual out): the compiler puts three of its own first."""
    from dsl.abi import Kind

    passed = [p for p in module.ABI.params if p.kind is not Kind.CONSTEXPR]
    strided = {p.source for p in passed if p.kind is Kind.ROW_STRIDE}
    return {3 + i for i, p in enumerate(passed) if p.kind is Kind.POINTER and p.source in strided}


def steady_state(ir: str, args: set[int]) -> tuple[int, int, int, int, Counter]:
    """The loops that move row tiles, summed: (loads, tile loads, tile stores, tile GM bytes, vector ops)."""
    from benchmarks import npu_compiler as compiler

    loads = tile_loads = tile_stores = gm_bytes = 0
    vector: Counter = Counter()
    for loop in compiler.loops(ir, args):
        if not (loop.tile_loads or loop.tile_stores):
            continue
        loads, tile_loads, tile_stores = (
            loads + loop.loads,
            tile_loads + loop.tile_loads,
            tile_stores + loop.tile_stores,
        )
        gm_bytes += loop.tile_bytes
        vector += loop.vector
    return loads, tile_loads, tile_stores, gm_bytes, vector


def cost_lowerings(ops: list[str]) -> list[tuple]:
    """(op, dtype, mode, rows, cols, lowering, entry) per seed shape: bf16 for every op; every dtype for add_rmsnorm."""
    from benchmarks import npu_compiler as compiler
    from dsl.abi import Kind, Source

    cases = []
    for op in ops:
        module = importlib.import_module(f"generated.{op}_npu")
        abi = module.ABI
        switches = [p for p in abi.call if p.kind is Kind.CONSTEXPR]
        modes = ("pre", "post") if any(p.source is Source.MODE_PRE for p in switches) else ("-",)
        if not any(p.source is Source.MODE_PRE for p in switches) and any(
            p.source is Source.RESIDUAL for p in abi.call
        ):
            modes = ("pre",) if any(p.source is Source.RESIDUAL_OUT for p in abi.call) else ("post",)
        dtypes = ("fp32", "fp16", "bf16") if op == "add_rmsnorm" else ("bf16",)
        for dtype in dtypes:
            for rows, cols in SEED_SHAPES + WIDE_SHAPES:
                kernel, _, decided, entry = module.LAUNCHER.decide(dtype, rows, cols, 0)
                signature = tuple(
                    (p.name, compiler.signature_type(p, dtype)) for p in abi.call if p.kind is not Kind.CONSTEXPR
                )
                options = tuple(sorted(tuple(module.LAUNCHER.options.items()) + (("multibuffer", entry.multibuffer),)))
                # The unmasked specialization: masked transfers have dynamic sizes in the IR, the
                # same operations otherwise.
                even = {"EVEN_M": True, "EVEN_N": True}
                constants = tuple((p.name, even.get(p.name, decided[p.name])) for p in abi.decided)
                for mode in modes:
                    switched = tuple((p.name, mode == "pre" if p.source is Source.MODE_PRE else True) for p in switches)
                    lowering = compiler.Lowering(
                        module.__name__, entry.passes, kernel.__name__, signature, switched + constants, options
                    )
                    cases.append((op, dtype, mode, rows, cols, lowering, entry))
    return cases


# The seed kernel's (mojo_opset PR #367, fused-add RMSNorm) tile loads and stores per element: one pass
# up to 2048 columns reads x and r and writes y (and s in pre mode); beyond, its first sweep reads x and
# r (and writes s in pre mode), its second reads s back (pre) or x and r again (post) and writes y
# (shared/seed/upstream-npu-norm-facts.md, section 2, STORE_S).
SEED_OPS = ("add_rmsnorm", "gemma_add_rmsnorm")


def seed_accesses(mode: str, n_cols: int) -> int:
    if n_cols <= 2048:
        return 4 if mode == "pre" else 3
    return 5


def write_cost(ops: list[str], out: Path) -> int:
    from benchmarks.ops import bytes_moved
    from dsl.model import DTYPE_BYTES, DType

    cases = cost_lowerings(ops)
    results = compile_all([case[5] for case in cases])
    rows, failures = [], 0
    for (op, dtype, mode, n_rows, n_cols, lowering, entry), (error, plan) in zip(cases, results, strict=True):
        shape = f"{n_rows}×{n_cols}"
        if error or plan.verdict != "ok":
            failures += 1
            rows.append(f"| {op} | {dtype} | {mode} | {shape} | {entry.passes} | failed | | | | | | | |")
            print(f"{op} {dtype} {mode} {shape}: {error or plan.detail}", file=sys.stderr)
            continue
        constants = dict(lowering.constants)
        tile = constants["BLOCK_M"] * constants["BLOCK_N"]
        module = importlib.import_module(lowering.module)
        loads, tile_loads, tile_stores, gm_bytes, vector = steady_state(plan.ir, tile_args(module))
        elem = DTYPE_BYTES[DType(dtype)]
        minimum = bytes_moved(op, mode if mode != "-" else "pre", n_rows, n_cols, elem)
        minimum -= (2 if "B_ptr" in dict(lowering.signature) else 1) * n_cols * elem  # the weight rows: left out
        minimum -= 4 * n_rows if "SCALE_ptr" in dict(lowering.signature) else 0
        casts = vector.get("vcast", 0)
        seed = f"{seed_accesses(mode, n_cols) * elem}" if op in SEED_OPS else "—"
        rows.append(
            f"| {op} | {dtype} | {mode} | {shape} | {entry.passes} {constants['BLOCK_M']}×{constants['BLOCK_N']} "
            f"| {gm_bytes / tile:.3g} | {seed} | {minimum / (n_rows * n_cols):.3g} | {tile_loads + tile_stores} "
            f"| {loads} "
            f"| {sum(vector.values())} ({casts}) | {plan.ub_bytes} | {'on' if entry.multibuffer else 'off'} |"
        )
    text = COST_HEADER.format(date=datetime.date.today().isoformat()) + "\n".join(rows) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return failures


COST_HEADER = """\
# npu: static cost of the kernels, from Ascend's memory plan

Written by `python -m benchmarks.npu_cost` (triton-ascend 3.2.0, ascendnpu-ir
1.2.0's `bishengir-compile`, A2 options; {date}). No NPU ran anything: these are
counts in the compiler's planned IR (after `hivm-plan-memory`) of the kernel the
launcher picks for each shape (its unmasked specialization: masks change the
transfers' sizes, not the operations), not times. Shapes: the seed PR's
(`shared/seed/npu-add-rmsnorm-pr.txt`) and 8×16384 (wider than any single-pass
tile: the column loop); every dtype for add_rmsnorm, bf16 for the other ops;
every optional input and store on.

* **GM B/elem**: bytes moved by the steady-state loops' tile loads and stores
  (loops that move a row tile), per tile element; **seed**: the same for the
  seed kernel (mojo_opset PR #367, fused-add RMSNorm: one pass up to 2048
  columns, else a first sweep that reads x and r and stores s, pre mode, and a
  second that reads s back, or x and r again in post mode; counted from its
  code, `benchmarks/npu_cost.py` `seed_accesses`), for the ops of its
  structure; **min**: the op's least
  (read x and r once, write y and s once; 1 byte per quantized y); per-row
  statistics and the weight and bias rows are left out of both.
* **GM acc.**: tile loads + stores per element in those loops; **loads**: every
  `hivm.hir.load` of those loops (the weight and bias rows too).
* **vector ops**: `hivm.hir.v*` operations in those loops, each one sweep of the
  vector unit over the tile (casts in brackets).
* **UB**: the highest unified-buffer byte of the plan; **mb**: multi-buffering
  as the entry launches it.

| op | dtype | mode | rows×cols | kernel | GM B/elem | seed | min | GM acc. | loads | vector ops (casts) | UB | mb |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ub-plan", action="store_true", help="write docs/npu/ub-plan.md instead of the cost report")
    parser.add_argument("--ops", help="comma-separated ops (default: every shipped op with the npu target)")
    parser.add_argument("--out", type=Path, help="output file (default: the docs/npu/ file)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRITON_INTERPRET", "1")  # this process only plans; workers turn it off
    os.environ.setdefault("NORMGEN_INTERPRET_TARGET", "npu")
    ops = npu_ops(args.ops.split(",") if args.ops else None)
    if args.ub_plan:
        failures = write_ub_plan(ops, args.out or UB_PLAN)
    else:
        failures = write_cost(ops, args.out or COST)
    if failures:
        print(f"{failures} kernel(s) failed to plan", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
