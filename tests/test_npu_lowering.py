"""Every npu dispatch entry's kernels lower through triton-ascend's compiler.

Runs only inside the triton-ascend virtual environment (``bash
scripts/npu_env.sh`` builds it; ``bash scripts/npu_checks.sh`` runs this file there
from the main one). For each shipped spec with the npu target and each entry of
its generated dispatch table, the kernel the entry dispatches to is compiled with
the constexprs the runtime's launcher decides for shapes in the entry's range
(BLOCK_M, BLOCK_N, with and without row and column masks, the grid), the entry's
launch options, every optional input and store switched on and each residual
mode. Parameters and their types come from the generated module's ``ABI``. triton-ascend lowers it through ``ttir``
and ``ttadapter`` (linalg/HIVM, by its bundled ``triton-adapter-opt``); the next
stage, ``npubin``, needs the CANN toolkit and stops with "ASCEND_HOME_PATH is
not set". Reaching that error with the ``.ttadapter`` file written is the pass
criterion: the front half of the NPU compiler accepted the kernel.

The compiles run in worker processes with TRITON_INTERPRET=0: under the
interpreter ``triton.jit`` (triton's own library functions included) returns
interpreted functions, which the compiler rejects, and this session also runs
the interpreter tests.
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib
import importlib.util
import itertools
import multiprocessing
import os
import re
import sys
import tempfile
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

from dsl import pipeline  # noqa: E402
from dsl.abi import Kind, Param, Source  # noqa: E402
from dsl.model import Target  # noqa: E402

pytestmark = pytest.mark.npu_env

NPU_TARGET = ("npu", "Ascend910B4", 0)  # GPUTarget arguments: an A2 part, as the planner's UB budget assumes
NPUBIN_ERROR = "ASCEND_HOME_PATH is not set"  # the npubin stage's first words without the CANN toolkit
# triton-adapter-opt sometimes aborts on a kernel it lowers fine on the next try (an
# LLVM crash report, about 1 run in 50 on a busy machine); a real rejection repeats.
TOOL_CRASH = "PLEASE submit a bug report"
ATTEMPTS = 4
WORKERS = min(2, os.cpu_count() or 1)

SPECS = [spec for spec in pipeline.load_specs(pipeline.SPECS) if Target.NPU in spec.targets]

POINTER_TYPE = {"fp32": "*fp32", "int8": "*i8", "uint8": "*u8"}  # by the ABI's element type; "x": x's dtype


class Lowering(NamedTuple):
    """One compile, as plain data: it pickles to a worker and is its own dedupe key."""

    module: str  # generated.<op>_npu
    prefix: str  # the direction's names in the module: "" (KERNELS, ...) or "BACKWARD_"
    key: str  # the kernel's key in the module's KERNELS (its pass)
    name: str  # the kernel's name, for messages
    signature: tuple[tuple[str, str], ...]
    constants: tuple[tuple[str, object], ...]
    options: tuple[tuple[str, object], ...]


class Outcome(NamedTuple):
    error: str | None  # None: lowered to ttadapter
    retries: int  # attempts lost to triton-adapter-opt crashes


# ----------------------------------------------------------------------------
# What to lower (planned in this process)


def signature_type(param: Param, dtype: str) -> str:
    """The Triton signature type of a parameter the call passes, from its ABI description."""
    if param.kind is Kind.POINTER:
        return POINTER_TYPE.get(param.element, f"*{dtype}")  # the dtype tokens fp32/fp16/bf16 are Triton's too
    if param.kind is Kind.SCALAR and param.source is Source.EPS:
        return "fp32"
    return "i32"  # row strides, n_rows, n_cols


def probe_shapes(entry) -> list[tuple[int, int]]:
    """(rows, cols) the entry covers: for rows and for columns, the first multiple of the block
    and the first non-multiple in the entry's range, where there is one."""

    def probes(lo: int, hi: int | None, block: int) -> list[int]:
        first_multiple = -(-lo // block) * block
        first_other = lo if lo % block else lo + 1
        return [n for n in (first_multiple, first_other) if hi is None or n <= hi]

    rows = probes(entry.rows_lo, entry.rows_hi, entry.block_m)
    cols = probes(entry.cols_lo, entry.cols_hi, entry.block_n)
    return [(r, c) for r in rows for c in cols]


@functools.cache
def plan_lowerings(name: str, prefix: str = "") -> tuple[tuple[Lowering, ...], int, tuple[str, ...]]:
    """Every (kernel, dtype, constexprs, options) the op's npu table of one direction (prefix ""
    forward, "BACKWARD_" backward) can launch, deduped; the number of entries; and the entries
    whose launch decision is not theirs."""
    module_name = f"generated.{name}_npu"
    module = importlib.import_module(module_name)
    abi, launcher, table = (getattr(module, prefix + part) for part in ("ABI", "LAUNCHER", "TABLE"))
    # The call's switches (optional inputs and stores, the residual mode): every value.
    switches = [p for p in abi.call if p.kind is Kind.CONSTEXPR]
    switch_values = list(
        itertools.product(*[(True, False) if p.source is Source.MODE_PRE else (True,) for p in switches])
    )
    launch_options = tuple(launcher.options.items())
    lowerings: dict[Lowering, None] = {}  # ordered set
    problems = []
    entries = table.entries
    if prefix:
        # The backward: per dtype, the narrowest and widest single-pass entries and the multi-pass
        # one, each at every mask and switch value. The other single-pass entries differ from
        # these in BLOCK_M and BLOCK_N only (the same kernel text and constexpr switches): the
        # front end's verdict does not depend on the sizes, and lowering all 67 entries would
        # cost CI minutes.
        by_pass = {}
        for entry in entries:
            by_pass.setdefault((entry.dtype, entry.passes), []).append(entry)
        entries = tuple(e for group in by_pass.values() for e in dict.fromkeys((group[0], group[-1])))
    for entry in entries:
        signature = tuple((p.name, signature_type(p, entry.dtype)) for p in abi.call if p.kind is not Kind.CONSTEXPR)
        # The launcher's options: the module's fixed ones and the entry's double buffering.
        options = tuple(sorted(launch_options + (("multibuffer", entry.multibuffer),)))
        for n_rows, n_cols in probe_shapes(entry):
            kernel, _, decided, chosen = launcher.decide(entry.dtype, n_rows, n_cols, 0)
            if chosen != entry:
                problems.append(f"{name}: {n_rows}x{n_cols} is in entry {tuple(entry)} but dispatches to {chosen}")
                continue
            constants = tuple((p.name, decided[p.name]) for p in abi.decided)
            for values in switch_values:
                switched = tuple((p.name, v) for p, v in zip(switches, values, strict=True))
                lowering = Lowering(
                    module_name, prefix, entry.passes, kernel.__name__, signature, switched + constants, options
                )
                lowerings[lowering] = None
    return tuple(lowerings), len(table.entries), tuple(problems)


def describe(lowering: Lowering) -> str:
    constants = ", ".join(f"{name}={value}" for name, value in lowering.constants)
    options = ", ".join(f"{name}={value}" for name, value in lowering.options)
    return f"{lowering.name} (X_ptr {dict(lowering.signature)['X_ptr']}; {constants}; {options})"


# ----------------------------------------------------------------------------
# Lowering (in worker processes)

_CACHE_ROOT = ""


def _start_worker(cache_root: str) -> None:
    global _CACHE_ROOT
    if "triton" in sys.modules:
        raise RuntimeError("triton was imported before the lowering worker could turn TRITON_INTERPRET off")
    os.environ["TRITON_INTERPRET"] = "0"
    _CACHE_ROOT = cache_root
    # Every compile prints "ERROR: Invalid bishengir path format"; keep that out of the report.
    log = os.open(os.path.join(cache_root, f"worker-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)


def brief(text: str, lines: int = 30) -> str:
    """A compiler error without its stack dump (a tool crash prints dozens of frames)."""
    kept = [line for line in text.splitlines() if line.strip() and not re.match(r"\s*#\d+ 0x", line)]
    return "\n".join(kept[:lines] + (["..."] if len(kept) > lines else []))


def lower_once(lowering: Lowering) -> str | None:
    """Compile one kernel for the npu target: None when it got past ttadapter, else what failed."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    # A cache folder per compile: its .ttadapter file is easy to find, and no failure
    # cached by another attempt can answer for this one.
    cache = Path(tempfile.mkdtemp(prefix=lowering.name[-40:] + "-", dir=_CACHE_ROOT))
    os.environ["TRITON_CACHE_DIR"] = str(cache)
    kernel = getattr(importlib.import_module(lowering.module), lowering.prefix + "KERNELS")[lowering.key]
    source = ASTSource(fn=kernel, signature=dict(lowering.signature), constants=dict(lowering.constants))
    try:
        triton.compile(source, target=GPUTarget(*NPU_TARGET), options=dict(lowering.options))
    except Exception as error:  # the compiler raises many types; the stage shows in the text
        text = str(error)
        if NPUBIN_ERROR not in text:
            return f"{type(error).__name__} before the npubin stage:\n{brief(text)}"
    # (A compile that succeeds outright, where the CANN toolkit is installed, passes too.)
    if not any(cache.glob(f"*/{kernel.__name__}.ttadapter")):
        return f"no {kernel.__name__}.ttadapter written under {cache}"
    return None


def lower(lowering: Lowering) -> Outcome:
    error, retries = lower_once(lowering), 0
    while error and TOOL_CRASH in error and retries < ATTEMPTS - 1:
        error, retries = lower_once(lowering), retries + 1
    return Outcome(error, retries)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    cache_root = tmp_path_factory.mktemp("triton-cache")  # fresh per session
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no triton imported yet
    with concurrent.futures.ProcessPoolExecutor(
        WORKERS, mp_context=context, initializer=_start_worker, initargs=(str(cache_root),)
    ) as executor:
        yield executor


# ----------------------------------------------------------------------------
# Tests


DIRECTIONS = [(spec.name, "") for spec in SPECS] + [(spec.name, "BACKWARD_") for spec in SPECS if spec.has_backward]


@pytest.mark.parametrize(
    "name,prefix", DIRECTIONS, ids=[f"{n}-{p.lower().strip('_') or 'forward'}" for n, p in DIRECTIONS]
)
def test_npu_dispatch_entries_lower_to_ttadapter(name, prefix, pool, capsys):
    lowerings, entries, problems = plan_lowerings(name, prefix)
    direction = prefix.lower().strip("_") or "forward"
    assert lowerings, f"{name}: no npu kernels to lower"
    start = time.perf_counter()
    outcomes = list(pool.map(lower, lowerings, chunksize=8))
    elapsed = time.perf_counter() - start
    failures = [f"{describe(low)}:\n{out.error}" for low, out in zip(lowerings, outcomes, strict=True) if out.error]
    retries = sum(out.retries for out in outcomes)
    note = f", {retries} {'retry' if retries == 1 else 'retries'} after triton-adapter-opt crashed" if retries else ""
    with capsys.disabled():  # the count is this test's result: show it even when it passes
        print(
            f"\nnpu lowering: {name} {direction}: {len(lowerings) - len(failures)}/{len(lowerings)} kernels "
            f"lowered to ttadapter for {entries} dispatch entries in {elapsed:.1f} s ({WORKERS} workers{note})"
        )
    assert not problems and not failures, f"{name}: " + "\n\n".join(problems + tuple(failures))


def test_lowering_check_catches_front_end_errors(pool):
    """Not vacuous: a kernel that triton-ascend's front end rejects fails before npubin."""
    lowering = plan_lowerings(SPECS[0].name)[0][0]
    broken = lowering._replace(signature=tuple((n, "i32" if n == "X_ptr" else t) for n, t in lowering.signature))
    outcome = pool.submit(lower, broken).result()
    assert outcome.error and "before the npubin stage" in outcome.error, outcome
