"""Ascend's compiler on an npu kernel: lower it with triton-ascend, plan its memory with bishengir-compile.

Runs only in the triton-ascend virtual environment (``bash scripts/npu_env.sh``
builds it, with ``ascendnpu-ir`` for ``bishengir-compile``). Two steps:

1. ``lower``: triton-ascend's front end and its ``triton-adapter-opt`` take a
   kernel through ``ttir`` to ``ttadapter`` (linalg/HIVM). The next stage,
   ``npubin``, needs the CANN toolkit and stops with "ASCEND_HOME_PATH is not
   set": reaching it with the ``.ttadapter`` file written is the pass.
2. ``plan_memory``: ``bishengir-compile`` (the compiler ``npubin`` calls) runs
   on that text with the options triton-ascend passes on an A2 part. It runs the
   whole HIVM pipeline, memory planning included, and stops where it needs
   ``hivmc`` (machine code, CANN only): "External hivmc run fails". Everything
   before that is the real compiler's verdict. The IR after ``hivm-plan-memory``
   gives the unified-buffer (UB) allocations and the operations of each loop.

Used by ``tests/test_npu_lowering.py`` (CI) and ``benchmarks/npu_cost.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import NamedTuple

NPU_TARGET = ("npu", "Ascend910B4", 0)  # GPUTarget arguments: an A2 part, as the planner's UB budget assumes
NPUBIN_ERROR = "ASCEND_HOME_PATH is not set"  # the npubin stage's first words without the CANN toolkit
HIVMC_END = "External hivmc run fails"  # bishengir-compile's last words without the CANN toolkit
FALLBACK = "Ub overflow detected"  # it retried without multi-buffering (and code motion)
HARD_OVERFLOW = re.compile(r"ub overflow, requires (\d+) bits while (\d+) bits available", re.IGNORECASE)

POINTER_TYPE = {"fp32": "*fp32", "int8": "*i8", "uint8": "*u8"}  # by the ABI's element type; "x": x's dtype
PARAMS = ("W_ptr", "B_ptr")  # the weight's and bias's rows: x's dtype, or fp32 with 16-bit x (a call-time choice)


class Lowering(NamedTuple):
    """One compile, as plain data: it pickles to a worker and is its own dedupe key."""

    module: str  # generated.<op>_npu
    key: str  # the kernel's key in the module's KERNELS (its pass)
    name: str  # the kernel's name, for messages
    signature: tuple[tuple[str, str], ...]
    constants: tuple[tuple[str, object], ...]
    options: tuple[tuple[str, object], ...]
    prefix: str = ""  # the direction's names in the module: "" (KERNELS, ...) or "BACKWARD_"

    @property
    def multibuffer(self) -> bool:
        return bool(dict(self.options).get("multibuffer", False))


def describe(lowering: Lowering) -> str:
    constants = ", ".join(f"{name}={value}" for name, value in lowering.constants)
    options = ", ".join(f"{name}={value}" for name, value in lowering.options)
    signature = dict(lowering.signature)
    weight = f", W_ptr {signature['W_ptr']}" if signature.get("W_ptr", signature["X_ptr"]) != signature["X_ptr"] else ""
    return f"{lowering.name} (X_ptr {signature['X_ptr']}{weight}; {constants}; {options})"


def with_fp32_params(lowering: Lowering) -> Lowering | None:
    """The same kernel called with fp32 weight and bias rows and 16-bit x (mixed precision: the same
    dispatch entry serves it), or None where x is fp32 or the kernel reads no parameter row."""
    signature = dict(lowering.signature)
    if signature["X_ptr"] == "*fp32" or not any(p in signature for p in PARAMS):
        return None
    return lowering._replace(signature=tuple((n, "*fp32" if n in PARAMS else t) for n, t in lowering.signature))


def signature_type(param, dtype: str) -> str:
    """The Triton signature type of a parameter the call passes, from its ABI description."""
    from dsl.abi import Kind, Source

    if param.kind is Kind.POINTER:
        return POINTER_TYPE.get(param.element, f"*{dtype}")  # the dtype tokens fp32/fp16/bf16 are Triton's too
    if param.kind is Kind.SCALAR and param.source is Source.EPS:
        return "fp32"
    return "i32"  # row strides, n_rows, n_cols


def brief(text: str, lines: int = 30) -> str:
    """A compiler error without its stack dump (a tool crash prints dozens of frames)."""
    kept = [line for line in text.splitlines() if line.strip() and not re.match(r"\s*#\d+ 0x", line)]
    return "\n".join(kept[:lines] + (["..."] if len(kept) > lines else []))


def probe_shapes(entry) -> list[tuple[int, int]]:
    """(rows, cols) the entry covers: for rows and for the columns of each column block it covers,
    the first multiple of the block and the first non-multiple in the range, where there is one."""

    def probes(lo: int, hi: int | None, block: int) -> list[int]:
        first_multiple = -(-lo // block) * block
        first_other = lo if lo % block else lo + 1
        return [n for n in (first_multiple, first_other) if hi is None or n <= hi]

    from dsl.table import column_blocks

    rows = probes(entry.rows_lo, entry.rows_hi, entry.block_m)
    blocks = column_blocks(entry.cols_lo, entry.cols_hi, entry.block_n, entry.align)  # one, or each BLOCK_N
    return [(r, c) for r in rows for lo, hi, block_n in blocks for c in probes(lo, hi, block_n)]


def plan_lowerings(name: str, prefix: str = "") -> tuple[dict[Lowering, object], int, tuple[str, ...]]:
    """Every (kernel, dtype, constexprs, options) the op's npu table of one direction (prefix "":
    forward, "BACKWARD_": backward) can launch, deduped, each with the first dispatch entry that
    launches it; the number of entries; and the entries whose launch decision is not theirs. The
    call's switches (optional inputs and stores) are all on, the residual mode takes both values.

    The backward lowers, per dtype, its narrowest and widest single-pass entries and its
    multi-pass entry, at every mask and switch value: its other single-pass entries differ from
    these in BLOCK_M and BLOCK_N only (the same kernel text and switches)."""
    from dsl.abi import Kind, Source

    module_name = f"generated.{name}_npu"
    module = importlib.import_module(module_name)
    abi, launcher, table = (getattr(module, prefix + part) for part in ("ABI", "LAUNCHER", "TABLE"))
    switches = [p for p in abi.call if p.kind is Kind.CONSTEXPR]
    switch_values = list(
        itertools.product(*[(True, False) if p.source is Source.MODE_PRE else (True,) for p in switches])
    )
    launch_options = tuple(launcher.options.items())
    lowerings: dict[Lowering, object] = {}  # ordered: lowering -> its entry
    problems = []
    entries = table.entries
    if prefix:
        by_pass: dict[tuple, list] = {}
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
                    module_name, entry.passes, kernel.__name__, signature, switched + constants, options, prefix
                )
                lowerings.setdefault(lowering, entry)
    return lowerings, len(table.entries), tuple(problems)


def tile_cover(lowerings: dict[Lowering, object]) -> list[Lowering]:
    """The lowerings a routine run compiles, of all ``plan_lowerings`` found (a lowering -> its entry):
    every dispatch entry at least once; and of each kernel text (kernel, signature, switches, masks,
    grid and options, everything but BLOCK_M and BLOCK_N), its narrowest and widest tile, every
    BLOCK_M it takes and a BLOCK_N that is not a power of two where it has one. The lowerings left
    out differ from these in tile sizes only, the same text through the same passes; which tiles
    fit the unified buffer is bishengir-compile's verdict on the representatives (``npu_cost``),
    compiled whatever this picks. NORMGEN_NPU_LOWER_ALL=1 makes the test compile every one."""

    def tile(lowering: Lowering) -> tuple[int, int]:
        constants = dict(lowering.constants)
        return constants["BLOCK_N"], constants["BLOCK_M"]

    groups: dict[tuple, list[Lowering]] = {}
    for lowering in lowerings:
        text = tuple(c for c in lowering.constants if c[0] not in ("BLOCK_M", "BLOCK_N"))
        groups.setdefault((lowering.key, lowering.signature, text, lowering.options, lowering.prefix), []).append(
            lowering
        )
    chosen: dict[Lowering, None] = {}
    for group in groups.values():
        group.sort(key=tile)
        picks = [group[0], group[-1]]
        picks += list({tile(g)[1]: g for g in reversed(group)}.values())  # each BLOCK_M, at its narrowest
        picks += [g for g in group if tile(g)[0] & (tile(g)[0] - 1)][:1]  # a BLOCK_N not a power of two
        chosen.update(dict.fromkeys(picks))
    seen = {id(lowerings[c]) for c in chosen}
    for lowering, entry in lowerings.items():  # every entry at least once
        if id(entry) not in seen:
            seen.add(id(entry))
            chosen[lowering] = None
    return list(chosen)


# ----------------------------------------------------------------------------
# Worker processes: triton must be imported with TRITON_INTERPRET off


def start_worker(cache_root: str) -> None:
    """Initializer of a spawned worker: compiles go to cache_root; the compiler's chatter to a log there."""
    if "triton" in sys.modules:
        raise RuntimeError("triton was imported before the lowering worker could turn TRITON_INTERPRET off")
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ["NORMGEN_COMPILE_ROOT"] = cache_root
    # Every compile prints "ERROR: Invalid bishengir path format"; keep that out of the report.
    log = os.open(os.path.join(cache_root, f"worker-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)


def lower(lowering: Lowering) -> tuple[str | None, Path | None]:
    """Compile one kernel to ttadapter: (None, its .ttadapter file), or (what failed, None)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    # A cache folder per compile: its .ttadapter file is easy to find, and no failure
    # cached by another attempt can answer for this one.
    root = os.environ.get("NORMGEN_COMPILE_ROOT") or None
    cache = Path(tempfile.mkdtemp(prefix=lowering.name[-40:] + "-", dir=root))
    os.environ["TRITON_CACHE_DIR"] = str(cache)
    kernel = getattr(importlib.import_module(lowering.module), lowering.prefix + "KERNELS")[lowering.key]
    source = ASTSource(fn=kernel, signature=dict(lowering.signature), constants=dict(lowering.constants))
    try:
        triton.compile(source, target=GPUTarget(*NPU_TARGET), options=dict(lowering.options))
    except Exception as error:  # the compiler raises many types; the stage shows in the text
        text = str(error)
        if NPUBIN_ERROR not in text:
            return f"{type(error).__name__} before the npubin stage:\n{brief(text)}", None
    # (A compile that succeeds outright, where the CANN toolkit is installed, passes too.)
    found = sorted(cache.glob(f"*/{kernel.__name__}.ttadapter"))
    if not found:
        return f"no {kernel.__name__}.ttadapter written under {cache}", None
    return None, found[0]


# ----------------------------------------------------------------------------
# Memory planning


def bishengir() -> Path | None:
    """bishengir-compile from the ascendnpu-ir wheel, or None when it is not installed."""
    spec = importlib.util.find_spec("ascendnpuir")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "bin" / "bishengir-compile"
        if path.is_file():
            return path
    return None


def bishengir_options(multibuffer: bool) -> list[str]:
    """The options triton-ascend's npubin stage passes on an A2 part (sync_solver=True: the graph sync solver)."""
    return [
        "--target=Ascend910B4",
        f"--enable-auto-multi-buffer={str(multibuffer).lower()}",
        "--enable-hivm-graph-sync-solver=true",
        "--enable-hfusion-compile=true",
        "--enable-hivm-compile=true",
        "--enable-triton-kernel-compile=true",
    ]


class Plan(NamedTuple):
    """bishengir-compile's verdict on one kernel."""

    verdict: str  # ok | fallback (UB overflow with multi-buffering: retried without) | overflow | error
    ub_bytes: int  # the highest UB byte the planned IR uses (0 when no plan was written)
    detail: str  # the compiler's words for anything but ok
    ir: str  # the kernel's IR after hivm-plan-memory ("" when none)


PLAN_TIMEOUT = 60  # seconds: a clean plan takes about one; after a UB overflow the compiler's retries take minutes


def plan_memory(ttadapter: Path, multibuffer: bool, timeout: float = PLAN_TIMEOUT) -> Plan:
    """Run bishengir-compile on a ttadapter file up to hivmc; classify and read the memory plan."""
    tool = bishengir()
    if tool is None:
        return Plan("error", 0, "bishengir-compile not found: pip install ascendnpu-ir==1.2.0", "")
    work = ttadapter.parent / "bishengir"
    plan_dir = work / "plan"
    command = [str(tool), str(ttadapter), *bishengir_options(multibuffer), "-o", str(work / "kernel")]
    command += ["--mlir-print-ir-after=hivm-plan-memory", f"--mlir-print-ir-tree-dir={plan_dir}"]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        parts = [p.decode(errors="replace") if isinstance(p, bytes) else p for p in (expired.stdout, expired.stderr)]
        return classify("".join(p or "" for p in parts) + f"\ntimed out after {timeout:.0f} s", None, "")
    # The kernel's function (not its infer_task_type helper); after a fallback, the last plan wins.
    dumps = sorted(p for p in plan_dir.glob("*/func_func_*/*.mlir") if "infer_task_type" not in p.parent.name)
    return classify(run.stdout + run.stderr, run.returncode, dumps[-1].read_text() if dumps else "")


def classify(text: str, returncode: int | None, ir: str) -> Plan:
    """bishengir-compile's verdict from its output (returncode None: it timed out)."""
    ub = ub_peak(ir)
    hard = HARD_OVERFLOW.search(text)
    if hard:
        return Plan("overflow", ub, hard.group(0), ir)
    if FALLBACK in text:
        note = next((line for line in text.splitlines() if FALLBACK in line), FALLBACK)
        return Plan("fallback", ub, note.strip(), ir)
    if returncode is None:
        return Plan("error", ub, brief(text), ir)
    if returncode == 0 or HIVMC_END in text:
        errors = [line for line in text.splitlines() if "error:" in line and HIVMC_END not in line]
        if not errors and ir:
            return Plan("ok", ub, "", ir)
        return Plan("error", ub, brief("\n".join(errors) or "no plan written"), ir)
    return Plan("error", ub, brief(text), ir)


# ----------------------------------------------------------------------------
# Reading the planned IR

ELEMENT_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "i64": 8, "i32": 4, "i16": 2, "i8": 1, "ui8": 1, "i1": 1}
_CONSTANT = re.compile(r"(%c\d+_i64) = arith\.constant (\d+) : i64")
_UB_BUFFER = re.compile(r"hivm\.hir\.pointer_cast\(([^)]*)\)\s*:\s*memref<([^,>]+)[^>]*?,\s*#hivm\.address_space<ub>>")


def element_bytes(element: str) -> int:
    if element.startswith("f8"):
        return 1
    return ELEMENT_BYTES[element]


def ub_peak(ir: str) -> int:
    """The highest UB byte any buffer of the plan reaches: max(offset + size) over its pointer casts."""
    constants = {name: int(value) for name, value in _CONSTANT.findall(ir)}
    peak = 0
    for offsets, shape in _UB_BUFFER.findall(ir):
        *dims, element = shape.split("x")
        count = 1
        for dim in dims:
            count *= int(dim)
        size = -(-count // 8) if element == "i1" else count * element_bytes(element)  # masks: one bit each
        for offset in offsets.split(","):
            peak = max(peak, constants[offset.strip()] + size)
    return peak


class LoopOps(NamedTuple):
    """The HIVM operations of one loop body (its nested loops apart; an if's body counts with its loop)."""

    loads: int  # all hivm.hir.load operations (weight rows and statistics too)
    tile_loads: int  # loads from a row-tiled tensor (x, r): a BLOCK_M x BLOCK_N tile each
    tile_stores: int  # stores to one (y, the residual out)
    tile_bytes: int  # GM bytes those tile loads and stores move
    vector: Counter  # hivm.hir.v* operation name -> count


_OP = re.compile(r"hivm\.hir\.(\w+)\b")
_GM_MEMREF = re.compile(r"memref<([0-9x?]+)x(\w+), strided<[^>]*>, #hivm\.address_space<gm>>")
_VIEW = re.compile(r"^(%[\w]+) = memref\.\w+ (%[\w]+)")


def loops(ir: str, tile_args: set[int]) -> list[LoopOps]:
    """Each ``scf.for`` body of the planned IR, innermost first (as they close). ``tile_args``: the
    kernel function's argument numbers (``%argN``) of the row-tiled tensors, which tell a tile
    transfer from a weight row or a statistic."""
    root: dict[str, str] = {}  # a memref view -> the function argument it views
    found: list[LoopOps] = []
    stack: list[dict] = []
    for line in ir.splitlines():
        stripped = line.strip()
        view = _VIEW.match(stripped)
        if view:
            root[view.group(1)] = root.get(view.group(2), view.group(2))
        if stripped.endswith("{"):  # a region opens: a loop's body, or an if's (counted with its loop)
            loop = bool(re.match(r"(%\S+ = )?scf\.for\b", stripped))
            stack.append({"loop": loop, "loads": 0, "tile_loads": 0, "tile_stores": 0, "bytes": 0, "v": Counter()})
            continue
        if stripped.startswith("}") and stack:
            body = stack.pop()
            if body["loop"]:
                found.append(LoopOps(body["loads"], body["tile_loads"], body["tile_stores"], body["bytes"], body["v"]))
            elif stack:
                outer = stack[-1]
                for key in ("loads", "tile_loads", "tile_stores", "bytes"):
                    outer[key] += body[key]
                outer["v"] += body["v"]
            continue
        op = _OP.search(stripped)
        if not stack or not op:
            continue
        body, name = stack[-1], op.group(1)
        if name in ("load", "store"):
            body["loads"] += name == "load"
            operand = re.search(r"(?:ins|outs)\((%[\w]+) : memref<[^#]*#hivm\.address_space<gm>>", stripped)
            gm = _GM_MEMREF.search(stripped)
            arg = root.get(operand.group(1), operand.group(1)) if operand else ""
            if gm and arg.startswith("%arg") and int(arg[4:]) in tile_args:
                body["tile_loads" if name == "load" else "tile_stores"] += 1
                elements = 1
                for dim in gm.group(1).split("x"):
                    elements *= int(dim)
                body["bytes"] += elements * element_bytes(gm.group(2))
        elif name.startswith("v"):
            body["v"][name] += 1
    return found
