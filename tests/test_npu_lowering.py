"""Every npu dispatch entry's kernels lower through triton-ascend's compiler and plan their memory in Ascend's.

Runs only inside the triton-ascend virtual environment (``bash
scripts/npu_env.sh`` builds it, with ``ascendnpu-ir`` for ``bishengir-compile``;
``bash scripts/npu_checks.sh`` runs this file there from the main one). For each
shipped spec with the npu target and each entry of its generated dispatch table,
the kernel the entry dispatches to is compiled with the constexprs the runtime's
launcher decides for shapes in the entry's range (BLOCK_M, BLOCK_N, with and
without row and column masks, the grid), the entry's launch options, every
optional input and store switched on and each residual mode. Parameters and
their types come from the generated module's ``ABI``.

Two checks, both by the real compilers (``benchmarks/npu_compiler.py`` runs them):

1. Lowering, every dispatch entry at least once and, of each kernel text, the tile
   sizes that bound it (``npu_compiler.tile_cover``; the ~40% left out differ only in
   BLOCK_M and BLOCK_N; NORMGEN_NPU_LOWER_ALL=1 compiles every such kernel):
   triton-ascend lowers it through ``ttir`` and ``ttadapter`` (linalg/HIVM, by its
   bundled ``triton-adapter-opt``); the next stage, ``npubin``, needs the CANN
   toolkit and stops with "ASCEND_HOME_PATH is not set". Reaching that error with
   the ``.ttadapter`` file written is the pass criterion: the front half of the NPU
   compiler accepted the kernel.
2. Memory planning, a representative per memory layout (``representatives``
   says which and why they cover every entry): ``bishengir-compile`` runs on
   the ``ttadapter`` text with the A2 options and the entry's multi-buffering,
   through ``hivm-plan-memory``, up to ``hivmc`` (CANN only). It fails the
   kernel on any compiler error, on a hard unified-buffer overflow and on the
   "Ub overflow detected" fallback (the compiler dropping multi-buffering that
   the entry asked for); and when the compiler's plan reaches higher in the
   unified buffer than the entry's ``ub_bytes`` (the planner's model,
   ``dsl/targets/npu_ub.py``), i.e. when the model undercounts. Its figure must also
   equal the one committed in ``docs/npu/ub-plan.md`` (both figures for every
   entry; ``python -m benchmarks.npu_cost --ub-plan`` rewrites it).

The compiles run in worker processes with TRITON_INTERPRET=0: under the
interpreter ``triton.jit`` (triton's own library functions included) returns
interpreted functions, which the compiler rejects, and this session also runs
the interpreter tests.
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib.util
import multiprocessing
import os
import time
from pathlib import Path
from typing import NamedTuple

import pytest


def _has_triton_ascend() -> bool:
    """triton-ascend's ``triton`` package (it has backends/ascend), found without importing
    it: a worker process must turn TRITON_INTERPRET off before triton's first import."""
    spec = importlib.util.find_spec("triton")
    locations = (spec.submodule_search_locations or []) if spec else []
    return any((Path(location) / "backends" / "ascend").is_dir() for location in locations)


if not _has_triton_ascend():
    pytest.skip(
        "this venv's triton is not triton-ascend: bash scripts/npu_checks.sh runs this file in .venv-npu "
        "(bash scripts/npu_env.sh builds it)",
        allow_module_level=True,
    )

from benchmarks import npu_compiler as compiler  # noqa: E402
from benchmarks import npu_cost  # noqa: E402
from benchmarks.npu_compiler import Lowering, Plan, describe  # noqa: E402
from dsl import pipeline  # noqa: E402
from dsl.model import Target  # noqa: E402

pytestmark = pytest.mark.npu_env

# triton-adapter-opt sometimes aborts on a kernel it lowers fine on the next try (an
# LLVM crash report, about 1 run in 50 on a busy machine); a real rejection repeats.
TOOL_CRASH = "PLEASE submit a bug report"
ATTEMPTS = 4
WORKERS = min(2, os.cpu_count() or 1)

SPECS = [spec for spec in pipeline.load_specs(pipeline.SPECS) if Target.NPU in spec.targets]


class Outcome(NamedTuple):
    error: str | None  # None: lowered to ttadapter
    retries: int  # attempts lost to triton-adapter-opt crashes
    plan: Plan | None  # bishengir-compile's plan (without its IR), for the representatives


@functools.cache
def plan_lowerings(name: str, prefix: str = "") -> tuple[dict, int, tuple[str, ...]]:
    return compiler.plan_lowerings(name, prefix)


# ----------------------------------------------------------------------------
# Lowering and memory planning (in worker processes)


def lower_and_plan(job: tuple[Lowering, bool]) -> Outcome:
    lowering, plan_it = job
    (error, ttadapter), retries = compiler.lower(lowering), 0
    while error and TOOL_CRASH in error and retries < ATTEMPTS - 1:
        (error, ttadapter), retries = compiler.lower(lowering), retries + 1
    if error or not plan_it:
        return Outcome(error, retries, None)
    return Outcome(None, retries, compiler.plan_memory(ttadapter, lowering.multibuffer)._replace(ir=""))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    cache_root = tmp_path_factory.mktemp("triton-cache")  # fresh per session
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no triton imported yet
    with concurrent.futures.ProcessPoolExecutor(
        WORKERS, mp_context=context, initializer=compiler.start_worker, initargs=(str(cache_root),)
    ) as executor:
        yield executor


def plan_problems(lowering: Lowering, entry, plan: Plan, committed: dict | None) -> list[str]:
    """What is wrong with one representative's memory plan (nothing, when all is well); ``committed``:
    docs/npu/ub-plan.md's figures, which the plan must equal (None: not compared, the backward's)."""
    where = describe(lowering)
    if plan.verdict == "fallback":
        return [
            f"{where}: bishengir-compile fell back (multi-buffering off; the planner did not predict it): {plan.detail}"
        ]
    if plan.verdict != "ok":
        return [f"{where}: bishengir-compile {plan.verdict}:\n{plan.detail}"]
    problems = []
    if plan.ub_bytes > entry.ub_bytes:
        problems.append(
            f"{where}: the compiler plans {plan.ub_bytes} UB bytes, the planner's model only {entry.ub_bytes} "
            "(dsl/targets/npu_ub.py, ub_bytes, undercounts)"
        )
    key = npu_cost.plan_key(lowering, entry) if committed is not None else None
    if committed is not None and committed.get(key) != (entry.ub_bytes, plan.ub_bytes):
        problems.append(
            f"{where}: docs/npu/ub-plan.md says {committed.get(key)} for (model, compiler), this run "
            f"{(entry.ub_bytes, plan.ub_bytes)}: run `python -m benchmarks.npu_cost --ub-plan` in .venv-npu"
        )
    return problems


# ----------------------------------------------------------------------------
# Tests


DIRECTIONS = [(spec.name, "") for spec in SPECS] + [(spec.name, "BACKWARD_") for spec in SPECS if spec.has_backward]


@pytest.mark.parametrize(
    "name,prefix", DIRECTIONS, ids=[f"{n}-{p.lower().strip('_') or 'forward'}" for n, p in DIRECTIONS]
)
def test_npu_dispatch_entries_lower_and_plan_memory(name, prefix, pool, capsys):
    """The forward's and the backward's kernels lower to ttadapter and each memory layout's widest tile
    plans in bishengir-compile with no overflow, no fallback and no more than the planner's figure;
    with 16-bit x, with fp32 weight and bias rows too (the mixed-precision call, the same entry).
    The forward's figures must also equal docs/npu/ub-plan.md's; the backward's UB is counted as the
    whole buffer (``dsl/targets/npu.py``, ``_backward_entry``), so its plans are not listed there."""
    direction = prefix.lower().strip("_") or "forward"
    lowerings, entries, problems = plan_lowerings(name, prefix)
    assert lowerings, f"{name}: no npu {direction} kernels to lower"
    planned = npu_cost.planned(lowerings)  # the representatives, and with fp32 weight rows where x is 16-bit
    committed = None if prefix else npu_cost.read_ub_plan()
    lowered = list(lowerings) if os.environ.get("NORMGEN_NPU_LOWER_ALL") == "1" else compiler.tile_cover(lowerings)
    jobs = [(lowering, lowering in planned) for lowering in lowered]
    jobs += [(lowering, True) for lowering in planned if lowering not in lowered]
    half = [dict(lowering.signature) for lowering in planned if dict(lowering.signature)["X_ptr"] != "*fp32"]
    mixed = [s for s in half if s.get("W_ptr") == "*fp32"]
    assert 2 * len(mixed) == len(half), f"{name}: each 16-bit representative is planned with fp32 weight rows too"
    start = time.perf_counter()
    outcomes = list(pool.map(lower_and_plan, jobs, chunksize=4))
    elapsed = time.perf_counter() - start
    failures = []
    for (lowering, _), outcome in zip(jobs, outcomes, strict=True):
        if outcome.error:
            failures.append(f"{describe(lowering)}:\n{outcome.error}")
        elif outcome.plan:
            failures += plan_problems(lowering, planned[lowering], outcome.plan, committed)
    retries = sum(out.retries for out in outcomes)
    note = f", {retries} {'retry' if retries == 1 else 'retries'} after triton-adapter-opt crashed" if retries else ""
    with capsys.disabled():  # the count is this test's result: show it even when it passes
        print(
            f"\nnpu lowering: {name} {direction}: {sum(not o.error for o in outcomes)}/{len(jobs)} kernels "
            f"lowered to ttadapter (of the {len(lowerings)} launchable), {len(planned)} memory plans by "
            f"bishengir-compile, for {entries} dispatch entries in {elapsed:.1f} s ({WORKERS} workers{note})"
        )
    assert not problems and not failures, f"{name}: " + "\n\n".join(problems + tuple(failures))


def test_lowering_check_catches_front_end_errors(pool):
    """Not vacuous: a kernel that triton-ascend's front end rejects fails before npubin."""
    lowering = next(iter(plan_lowerings(SPECS[0].name)[0]))
    broken = lowering._replace(signature=tuple((n, "i32" if n == "X_ptr" else t) for n, t in lowering.signature))
    outcome = pool.submit(lower_and_plan, (broken, True)).result()
    assert outcome.error and "before the npubin stage" in outcome.error, outcome


def test_memory_plan_verdicts():
    """bishengir-compile's words, as it prints them, to verdicts (a fallback run takes minutes: canned)."""
    end = 'loc("k.ttadapter":1:1): error: External hivmc run fails, returning module before running external compiler\n'
    end += "[ERROR] Failed to run BiShengIR pipeline\n"
    ir = "%c0_i64 = arith.constant 0 : i64\n"
    ir += "%1 = hivm.hir.pointer_cast(%c0_i64) : memref<4x64xf32, #hivm.address_space<ub>>"
    assert compiler.classify(end, 1, ir) == Plan("ok", 1024, "", ir)
    note = "[NOTE] Ub overflow detected; automatically set enable-auto-multi-buffer to false and retrying compilation."
    assert compiler.classify(note + "\n" + end, 1, ir).verdict == "fallback"
    hard = "error: ub overflow, requires 1909760 bits while 1572864 bits available!\n"
    hard += "[ERROR] Failed to run BiShengIR pipeline"
    assert compiler.classify(hard, 1, "").verdict == "overflow"
    assert compiler.classify("error: 'hivm.hir.vadd' op operand #0 must be ...\n" + end, 1, ir).verdict == "error"
    assert compiler.classify("timed out after 60 s", None, "").verdict == "error"


def test_memory_plan_check_catches_overflow_and_undercount(pool):
    """Not vacuous: a tile the unified buffer cannot hold fails in the real compiler (multi-buffering
    off: a hard overflow), and a model figure under the compiler's plan is reported."""
    name = SPECS[0].name
    lowerings = plan_lowerings(name)[0]
    singles = [(low, e) for low, e in lowerings.items() if e.passes == "single" and not e.multibuffer]
    lowering, entry = max(singles, key=lambda pair: pair[1].block_n)
    constants = dict(lowering.constants)
    constants["BLOCK_M"] = 64  # 64 rows of the widest single-pass tile: far past the unified buffer
    huge = lowering._replace(constants=tuple(constants.items()))
    outcome = pool.submit(lower_and_plan, (huge, True)).result()
    assert outcome.error is None and outcome.plan.verdict == "overflow", outcome
    assert plan_problems(huge, entry, outcome.plan, {}), outcome
    outcome = pool.submit(lower_and_plan, (lowering, True)).result()
    assert outcome.plan.verdict == "ok", outcome
    undercount = entry._replace(ub_bytes=outcome.plan.ub_bytes - 1)
    problems = plan_problems(lowering, undercount, outcome.plan, {})
    assert any("undercounts" in p for p in problems), problems


@pytest.mark.parametrize("name", [spec.name for spec in SPECS])
def test_tile_cover_keeps_every_entry_and_each_texts_bounding_tiles(name):
    """The routine run's cover (``tile_cover``) of the forward's lowerings: every entry lowers at
    least once; every kernel text (all but BLOCK_M, BLOCK_N) keeps its narrowest and widest BLOCK_N
    and each of its BLOCK_M values; nothing outside the launchable set."""
    lowerings = plan_lowerings(name)[0]
    cover = compiler.tile_cover(lowerings)
    assert set(cover) <= set(lowerings) and len(set(cover)) == len(cover)
    assert {id(lowerings[c]) for c in cover} == {id(e) for e in lowerings.values()}, "an entry never lowers"
    texts: dict[tuple, list[tuple[int, int]]] = {}
    for low in lowerings:
        c = dict(low.constants)
        rest = tuple(sorted((k, v) for k, v in c.items() if k not in ("BLOCK_M", "BLOCK_N")))
        texts.setdefault((low.key, low.signature, rest, low.options), []).append((c["BLOCK_N"], c["BLOCK_M"]))
    kept: dict[tuple, set] = {}
    for low in cover:
        c = dict(low.constants)
        rest = tuple(sorted((k, v) for k, v in c.items() if k not in ("BLOCK_M", "BLOCK_N")))
        kept.setdefault((low.key, low.signature, rest, low.options), set()).add((c["BLOCK_N"], c["BLOCK_M"]))
    for text, tiles in texts.items():
        got = kept.get(text, set())
        assert {bn for bn, _ in got} >= {min(bn for bn, _ in tiles), max(bn for bn, _ in tiles)}, text
        assert {bm for _, bm in got} == {bm for _, bm in tiles}, text
        if any(bn & (bn - 1) for bn, _ in tiles):
            assert any(bn & (bn - 1) for bn, _ in got), f"{text}: no BLOCK_N that is not a power of two"
