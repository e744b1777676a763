"""Every npu dispatch entry's kernels lower through triton-ascend's compiler.

Runs only inside the triton-ascend virtual environment (``bash
scripts/npu_env.sh`` builds it; ``tests/test_npu_env.py`` runs this file there
from the main one). For each shipped spec with the npu target and each entry of
its generated dispatch table, every kernel variant the entry can dispatch to is
compiled with the entry's dtype, BLOCK_M, BLOCK_N and launch options, every
optional input and store switched on. triton-ascend lowers it through ``ttir``
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
import inspect
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
        "this venv's triton is not triton-ascend: tests/test_npu_env.py runs this file in .venv-npu "
        "(bash scripts/npu_env.sh builds it)",
        allow_module_level=True,
    )

from dsl import pipeline  # noqa: E402
from dsl.model import QUANT_STORAGE_DTYPE, Casting, NormSpec, Target  # noqa: E402

pytestmark = pytest.mark.npu_env

NPU_TARGET = ("npu", "Ascend910B4", 0)  # GPUTarget arguments: an A2 part, as the planner's UB budget assumes
NPUBIN_ERROR = "ASCEND_HOME_PATH is not set"  # the npubin stage's first words without the CANN toolkit
# triton-adapter-opt sometimes aborts on a kernel it lowers fine on the next try (an
# LLVM crash report, about 1 run in 50 on a busy machine); a real rejection repeats.
TOOL_CRASH = "PLEASE submit a bug report"
ATTEMPTS = 4
WORKERS = min(2, os.cpu_count() or 1)

SPECS = [spec for spec in pipeline.load_specs(pipeline.SPECS) if Target.NPU in spec.targets]

# The op allocates quantized outputs in these dtypes (dsl/model.py); Triton's spelling.
QUANT_SIGNATURE = {"torch.int8": "i8", "torch.uint8": "u8"}


class Lowering(NamedTuple):
    """One compile, as plain data: it pickles to a worker and is its own dedupe key."""

    module: str  # generated.<op>_npu
    key: tuple  # the kernel's key in the module's KERNELS
    name: str  # the kernel's name, for messages
    signature: tuple[tuple[str, str], ...]
    constants: tuple[tuple[str, object], ...]
    options: tuple[tuple[str, object], ...]


class Outcome(NamedTuple):
    error: str | None  # None: lowered to ttadapter
    retries: int  # attempts lost to triton-adapter-opt crashes


# ----------------------------------------------------------------------------
# What to lower (planned in this process)


def param_type(spec: NormSpec, name: str, dtype: str) -> str:
    """The Triton signature type of a runtime kernel parameter, as the generated op passes it."""
    if name == "Y_ptr" and spec.is_quantized:
        return "*" + QUANT_SIGNATURE[QUANT_STORAGE_DTYPE[spec.quantize]]
    if name == "SCALE_ptr":  # the op allocates the per-row scale in fp32 whatever the casting
        return "*fp32"
    if name in ("MEAN_ptr", "RSTD_ptr"):  # the op's stats dtype: fp32, or x's dtype for casting none
        return f"*{dtype}" if spec.casting is Casting.NONE else "*fp32"
    if name in ("X_ptr", "R_ptr", "W_ptr", "B_ptr", "Y_ptr", "RES_ptr"):
        return f"*{dtype}"  # the dtype tokens fp32/fp16/bf16 are Triton's spellings too
    if name.endswith("_row_stride") or name in ("n_rows", "n_cols"):
        return "i32"
    if name == "eps":
        return "fp32"
    raise LookupError(f"{spec.name}: kernel parameter {name} has no signature rule in {__name__}; add one")


def constant_value(spec: NormSpec, name: str, block_m: int, block_n: int) -> object:
    if name == "BLOCK_M":
        return block_m
    if name == "BLOCK_N":
        return block_n
    if name.startswith(("HAS_", "STORE_")):  # optional inputs and stores: lower the kernel with all of them
        return True
    raise LookupError(f"{spec.name}: constexpr {name} has no value rule in {__name__}; add one")


def kernel_params(kernel) -> list[tuple[str, bool]]:
    """(name, is constexpr) per parameter. ``kernel.fn`` is the Python function both in a
    JITFunction and in the interpreter's InterpretedFunction."""
    params = []
    for param in inspect.signature(kernel.fn).parameters.values():
        annotation = param.annotation
        spelling = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        params.append((param.name, spelling.endswith("constexpr")))
    return params


def reachable_keys(mode: str, entry) -> set[tuple]:
    """The KERNELS keys an entry dispatches to, from runtime.variant_key itself, asked about
    shapes the entry covers: for rows and for columns, the first multiple of the block and
    the first non-multiple in the entry's range, where there is one."""
    from dsl import runtime

    def probes(lo: int, hi: int | None, block: int) -> list[int]:
        first_multiple = -(-lo // block) * block
        first_other = lo if lo % block else lo + 1
        return [n for n in (first_multiple, first_other) if hi is None or n <= hi]

    rows = probes(entry.rows_lo, entry.rows_hi, entry.block_m)
    cols = probes(entry.cols_lo, entry.cols_hi, entry.block_n)
    return {runtime.variant_key(mode, entry, r, c) for r in rows for c in cols}


@functools.cache
def plan_lowerings(name: str) -> tuple[tuple[Lowering, ...], int, tuple[str, ...]]:
    """Every (kernel, dtype, blocks, options) the op's npu table can launch, deduped; the
    number of entries; and the entries that dispatch to no kernel."""
    spec = next(spec for spec in SPECS if spec.name == name)
    module_name = f"generated.{name}_npu"
    module = importlib.import_module(module_name)
    modes = [m.value for m in spec.residual] or ["none"]
    launch_options = tuple(module.LAUNCHER.options.items())
    lowerings: dict[Lowering, None] = {}  # ordered set
    problems = []
    for entry in module.TABLE.entries:
        for mode in modes:
            for key in sorted(reachable_keys(mode, entry)):
                kernel = module.KERNELS.get(key)
                if kernel is None:
                    problems.append(f"{name}: entry {tuple(entry)} dispatches to {key}, which is not in KERNELS")
                    continue
                signature, constants = [], []
                for param, constexpr in kernel_params(kernel):
                    if constexpr:
                        constants.append((param, constant_value(spec, param, entry.block_m, entry.block_n)))
                    else:
                        signature.append((param, param_type(spec, param, entry.dtype)))
                # The launcher's options: the module's fixed ones and the entry's double buffering.
                options = tuple(sorted(launch_options + (("multibuffer", entry.multibuffer),)))
                lowering = Lowering(module_name, key, kernel.__name__, tuple(signature), tuple(constants), options)
                lowerings[lowering] = None
    return tuple(lowerings), len(module.TABLE.entries), tuple(problems)


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
    kernel = importlib.import_module(lowering.module).KERNELS[lowering.key]
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


@pytest.mark.parametrize("name", [spec.name for spec in SPECS])
def test_npu_dispatch_entries_lower_to_ttadapter(name, pool, capsys):
    lowerings, entries, problems = plan_lowerings(name)
    assert lowerings, f"{name}: no npu kernels to lower"
    start = time.perf_counter()
    outcomes = list(pool.map(lower, lowerings, chunksize=8))
    elapsed = time.perf_counter() - start
    failures = [f"{describe(low)}:\n{out.error}" for low, out in zip(lowerings, outcomes, strict=True) if out.error]
    retries = sum(out.retries for out in outcomes)
    note = f", {retries} {'retry' if retries == 1 else 'retries'} after triton-adapter-opt crashed" if retries else ""
    with capsys.disabled():  # the count is this test's result: show it even when it passes
        print(
            f"\nnpu lowering: {name}: {len(lowerings) - len(failures)}/{len(lowerings)} kernels lowered to ttadapter "
            f"for {entries} dispatch entries in {elapsed:.1f} s ({WORKERS} workers{note})"
        )
    assert not problems and not failures, f"{name}: " + "\n\n".join(problems + tuple(failures))


def test_lowering_check_catches_front_end_errors(pool):
    """Not vacuous: a kernel that triton-ascend's front end rejects fails before npubin."""
    lowering = plan_lowerings(SPECS[0].name)[0][0]
    broken = lowering._replace(signature=tuple((n, "i32" if n == "X_ptr" else t) for n, t in lowering.signature))
    outcome = pool.submit(lower, broken).result()
    assert outcome.error and "before the npubin stage" in outcome.error, outcome
