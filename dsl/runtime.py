"""Where a call runs and how it launches (hand-written): the Launcher.

The dispatch tables it looks up are ``dsl/dispatch.py``'s (re-exported here: the generated
code names ``runtime.Entry`` and ``runtime.DispatchTable``); the launch key and arguments
it is passed come from ``dsl/launch_layout.py``.

Environment variables, read once at import:

* ``TRITON_INTERPRET=1``: CPU tensors run the Triton kernels in Triton's
  interpreter instead of the generated PyTorch reference (set it before
  importing the generated package).
* ``NORMGEN_INTERPRET_TARGET``: which target's kernels the interpreter runs on
  CPU tensors, ``cuda`` (default) or ``npu`` (needs triton-ascend).
* ``NORMGEN_NPU_VECTOR_CORES``: the vector-core count the npu grid assumes when
  no NPU driver answers (in the interpreter); default 8.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import os
import threading
import warnings

import torch

from .abi import Kind, Signature, Source
from .checks import NormgenError  # public here too: dsl.runtime.NormgenError
from .dispatch import DispatchMiss as DispatchMiss  # public here too: the generated tables and kernel
from .dispatch import DispatchTable as DispatchTable  # modules name runtime.Entry and runtime.DispatchTable
from .dispatch import Entry as Entry
from .dispatch import amend as amend  # runtime.amend: a table written as another's, amended
from .dispatch import split_columns
from .interpreter import interpreting

INTERPRET = interpreting()  # TRITON_INTERPRET as the installed Triton reads it
INTERPRET_TARGET = os.environ.get("NORMGEN_INTERPRET_TARGET", "cuda")
if INTERPRET_TARGET not in ("cuda", "npu"):
    raise ValueError(f"NORMGEN_INTERPRET_TARGET must be 'cuda' or 'npu', got {INTERPRET_TARGET!r}")
if INTERPRET and INTERPRET_TARGET == "npu" and importlib.util.find_spec("triton.backends.ascend") is None:
    # (upstream Triton's interpreter takes only power-of-two blocks; the npu kernels' are not all: most
    # calls would fail inside the interpreter with "arange's range must be a power of 2")
    raise ValueError(
        "NORMGEN_INTERPRET_TARGET=npu runs the npu kernels in triton-ascend's interpreter, and this "
        "environment's triton is not triton-ascend (bash scripts/npu_env.sh builds a venv that has it)"
    )

NPU_VECTOR_CORES = os.environ.get("NORMGEN_NPU_VECTOR_CORES", "8")
# (read at an npu launch in the interpreter; " 8" is 8, "²" is no digit)
if not (NPU_VECTOR_CORES.isascii() and NPU_VECTOR_CORES.strip().isdigit() and int(NPU_VECTOR_CORES) > 0):
    raise ValueError(f"NORMGEN_NPU_VECTOR_CORES must be a positive whole number, got {NPU_VECTOR_CORES!r}")

DTYPE_TOKEN = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


# ----------------------------------------------------------------------------
# Where a call runs


def kernel_target(device: torch.device) -> str | None:
    """'cuda' or 'npu' for the kernels to run, None for the PyTorch reference."""
    kind = device.type
    if kind == "cpu":
        return INTERPRET_TARGET if INTERPRET else None
    if kind in ("cuda", "npu"):
        return kind
    raise NormgenError(f"normgen ops run on cuda, npu and cpu tensors, not on {kind}")


# torch.cuda.current_device() without its initialization check (a cuda tensor exists: it is done)
current_cuda_device = getattr(torch._C, "_cuda_getDevice", torch.cuda.current_device)


def current_device(target: str) -> int:
    """The index of the device current on the calling thread for a target's launches (cuda, npu).

    Triton launches on the current device: it loads the kernel there and takes that device's
    stream. A call whose tensors live on another device makes theirs current first
    (``other_device``). Without it (two H200s, 2026-11-28), Triton refused cuda:1's pointers
    with cuda:0 current ("cannot be accessed from Triton (cpu tensor?)"), and once the devices
    had peer access, the cached launch failed with "invalid resource handle"
    (tests/test_multi_device.py).
    """
    if target == "cuda":
        return current_cuda_device()
    return torch.npu.current_device()  # (torch_npu, which the npu target needs)


@functools.cache
def device_count(target: str) -> int:
    """How many devices of a target this process sees (fixed at its start)."""
    return torch.cuda.device_count() if target == "cuda" else torch.npu.device_count()


def other_device(target: str, device_index: int):
    """A context making ``device_index`` current for a launch, or None where it is current already
    (and in the interpreter, whose tensors are on the CPU). (Asking which device is current takes
    170 ns on the H200 machine: a process that sees one device does not ask.)"""
    if INTERPRET or device_count(target) < 2 or device_index == current_device(target):
        return None
    return (torch.cuda if target == "cuda" else torch.npu).device(device_index)


@functools.cache
def npu_vector_cores(device_index: int) -> int:
    """Vector cores of one NPU, asked of the driver once per device and cached."""
    if INTERPRET:
        return int(NPU_VECTOR_CORES)
    import triton

    properties = triton.runtime.driver.active.utils.get_device_properties(device_index)
    return int(properties["num_vectorcore"])


@functools.cache
def cuda_sm_count(device_index: int) -> int:
    if INTERPRET:
        return 4
    return torch.cuda.get_device_properties(device_index).multi_processor_count


@functools.cache
def cuda_native_fp8(device_index: int) -> bool:
    """The GPU converts fp32 to float8_e4m3fn in one instruction (an NVIDIA GPU of compute
    capability 8.9 and up); never in the interpreter, whose conversion is not the device's, nor on
    an AMD GPU (ROCm reports its gfx version as the capability, 9.4 for an MI300, and its e4m3
    conversion is not the one tests/test_quantize.py checked), nor where no GPU answers (a launch
    decided for inspection; the portable encoder gives the same bits)."""
    if INTERPRET or torch.version.hip is not None or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device_index) >= (8, 9)


@functools.cache
def cuda_native_int8(device_index: int) -> bool:
    """The GPU converts fp32 to int8 in one PTX instruction, rounding half to even, saturating and
    taking NaN to 0 (every NVIDIA GPU); never in the interpreter or on an AMD GPU (ROCm), which run
    no PTX, nor where no GPU answers (the portable form gives the same codes)."""
    return not INTERPRET and torch.version.hip is None and torch.cuda.is_available()


# ----------------------------------------------------------------------------
# Launch


_INTERPRETER_LOCK = threading.Lock()

# Entries per per-shape cache (launch decisions, direct launches, the fast path's records): a server's
# ever-changing row counts must not grow them without end. A full cache is emptied and refills as calls
# come (each entry costs one slow-path call to rebuild).
CACHE_LIMIT = 4096


def remember(cache: dict, key, value):
    """cache[key] = value, emptying the cache first where it holds CACHE_LIMIT entries; returns value."""
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


INT32_MAX = 2**31 - 1


def small_offsets(n_rows: int, block_m: int, ints: tuple) -> bool:
    """Whether every offset a kernel computes from a row (the row times its tensor's row stride, plus a
    column) fits in int32, for ``n_rows`` rows in tiles of ``block_m`` and ``ints`` (n_cols and the
    row strides): a tile's rows past the last (masked, but their offsets computed) included."""
    return (n_rows + block_m) * max(ints) <= INT32_MAX


class Launcher:
    """Launches one op's kernels of one direction on one target; the generated op module calls it.

    ``abi`` is the kernels' parameter list (dsl/abi.py): the op passes a launch
    key (x's dtype, the values of the ABI's launch-key parameters, then the
    weight's and bias's dtype: x's, or fp32 with 16-bit x) and the
    call's arguments in kernel order; the launcher appends the constexprs it
    decides (blocks, masks, grid, VEC). The first call of a launch key looks up
    the dispatch table, picks the pass's kernel, sizes the grid and launches
    through Triton, which compiles. On CUDA, later calls with the same key go
    straight to the compiled kernel's C launcher with its cached metadata, where
    this Triton's launcher layout is known and passed its first-launch check
    (``direct_launch_ok``): no table lookup, no argument binding, no
    specialization work. The direct launches are compiled for pointers that
    are all 16-byte aligned (Triton specializes on alignment per argument), so
    only aligned calls use them; any other call takes Triton's own path, which
    picks or compiles the specialization for its pointers.

    Triton's interpreter patches the language module while a kernel runs, so
    interpreted launches are serialized (one at a time per process).
    """

    def __init__(self, table: DispatchTable, kernels: dict, abi: Signature, target: str, options: dict):
        self.table, self.kernels, self.abi, self.target, self.options = table, kernels, abi, target, options
        self.direct = target == "cuda" and not INTERPRET
        # Where the launch key holds n_rows, n_cols and the row strides (the ABI says).
        self.rows_at = abi.key_position(Source.N_ROWS, Kind.SCALAR)
        self.cols_at = abi.key_position(Source.N_COLS, Kind.SCALAR)
        self.strides_at = tuple(abi.key_position(p.source, Kind.ROW_STRIDE) for p in abi.row_strides)
        # the device's own conversions the kernels take (constexprs decided per device)
        self.natives = tuple(p.source for p in abi.decided if p.source in (Source.NATIVE_FP8, Source.NATIVE_INT8))
        # device index -> {launch key -> direct launch} (cuda; compiled kernels are per device)
        self.fast: collections.defaultdict[int, dict] = collections.defaultdict(dict)
        self.slow: dict[tuple, tuple] = {}  # (launch key, device) -> (kernel, grid, options)
        # device index -> {launch key -> Triton's compiled kernel of the direct launch} (dsl/host.py reads it)
        self.compiled: collections.defaultdict[int, dict] = collections.defaultdict(dict)

    def decide(self, dtype: str, n_rows: int, n_cols: int, device_index: int, ints: tuple = ()) -> tuple:
        """(kernel, grid, options, entry) for a shape: the table lookup and launch policy.

        ``options`` holds the launcher's constexprs (the ABI's decided parameters,
        in order) and then the launch options. ``ints``: n_cols and the row
        strides of the call (contiguous rows if empty), from which VEC (the
        widest vector, up to 16 bytes, that divides them all) is derived.
        """
        # A symbolic row count (torch.compile, dynamic shapes: a torch.SymInt) takes the entry of the
        # most rows, keeps the row mask and sizes the grid symbolically (sym_min, sym_max): no
        # decision here tests the row count, so the compiled graph holds for every row count.
        known = isinstance(n_rows, int)
        entry = self.table.lookup(dtype, n_rows if known else None, n_cols)
        kernel = self.kernels[entry.passes]
        tiles = -(-n_rows // entry.block_m)
        persistent, split = entry.grid == "persistent", entry.grid == "split"
        if persistent:
            cores = npu_vector_cores(device_index) if self.target == "npu" else cuda_sm_count(device_index)
            # min_tiles thins the grid (fewer partial sums) but never below one program per core
            chunks = torch.sym_max(cores, -(-tiles // entry.min_tiles))
            limit = torch.sym_min(cores * entry.programs_per_core, 65535)
            programs = torch.sym_max(1, torch.sym_min(torch.sym_min(limit, chunks), tiles))
        else:
            programs = torch.sym_max(1, tiles)
        ints = ints or (n_cols,)
        common = 0
        for value in ints:
            common |= value
        block_n = entry.block_n_for(n_cols)
        split_n = split_columns(block_n) if split else 0
        if split:  # then the column programs (where the rows are symbolic, an expression of them too)
            programs = tiles + -(-n_cols // split_n)
        values = {
            Source.BLOCK_M: entry.block_m,
            Source.BLOCK_N: block_n,
            Source.EVEN_M: n_rows % entry.block_m == 0 if known else entry.block_m == 1,
            Source.EVEN_N: n_cols % block_n == 0,
            Source.PERSISTENT: persistent,
            Source.VEC: min(common & -common, 16 // DTYPE_BYTES[dtype]),
            Source.STAGES: entry.stages,
            Source.SPLIT: split_n,
            Source.SMALL_OFFSETS: known and small_offsets(n_rows, entry.block_m, ints),
        }
        for source in self.natives:
            values[source] = (cuda_native_fp8 if source is Source.NATIVE_FP8 else cuda_native_int8)(device_index)
        options = {p.name: values[p.source] for p in self.abi.decided}
        if not INTERPRET:
            options.update(self.options)
            if self.target == "npu":
                options["multibuffer"] = entry.multibuffer
                kernel = npu_entry_point(kernel)
            else:
                options["num_warps"] = entry.num_warps
        return kernel, (programs,), options, entry

    def decision(self, key: tuple, device_index: int) -> tuple:
        """(kernel, grid, options) of a launch key on a device: decided once, then cached (the backward
        sizes its partial sums by the grid)."""
        decision = self.slow.get((key, device_index))
        if decision is None:
            decision = remember(self.slow, (key, device_index), self.decide_key(key, device_index))
        return decision

    def decide_key(self, key: tuple, device_index: int) -> tuple:
        """(kernel, grid, options) of a launch key, not cached (``decision`` caches; a traced key's row
        count may be symbolic, see dsl/compiled.py)."""
        n_rows, n_cols = key[self.rows_at], key[self.cols_at]
        ints = (n_cols,) + tuple(key[i] for i in self.strides_at)
        kernel, grid, options, _ = self.decide(DTYPE_TOKEN[key[0]], n_rows, n_cols, device_index, ints)
        return kernel, grid, options

    def __call__(self, key: tuple, aligned: bool, device_index: int, args: tuple) -> None:
        """Launch; key = (x's dtype, *the values of the ABI's launch-key parameters, the parameters' dtype).

        On the tensors' device: where another device is current, it is made current for the launch."""
        if (guard := other_device(self.target, device_index)) is not None:
            with guard:
                return self(key, aligned, device_index, args)
        fast = self.fast[device_index].get(key) if aligned else None
        if fast is not None:
            launch, grid, function, prefix, constexprs = fast
            launch(grid, 1, 1, torch._C._cuda_getCurrentRawStream(device_index), function, *prefix, *args, *constexprs)
            return
        kernel, grid, options = self.decision(key, device_index)
        if INTERPRET:
            with _INTERPRETER_LOCK:
                kernel[grid](*args, **options)
            return
        compiled = kernel[grid](*args, **options)
        if self.direct and aligned and compiled is not None and direct_launch_ok(device_index):
            constexprs = tuple(options[p.name] for p in self.abi.decided)
            remember(self.fast[device_index], key, _direct_launch(compiled, grid, constexprs))
            remember(self.compiled[device_index], key, compiled)

    def cached_launch(self, key: tuple, device_index: int) -> tuple | None:
        """The direct launch cached for a launch key on a device (see ``__call__``), or None while there is none.

        (launch, grid, function, prefix, constexprs): ``launch(grid, 1, 1, stream, function,
        *prefix, *args, *constexprs)`` launches the compiled kernel. The op surface keeps it
        with its own per-shape record and calls it directly.
        """
        return self.fast[device_index].get(key)

    def compiled_kernel(self, key: tuple, device_index: int):
        """Triton's compiled kernel behind a launch key's direct launch, or None."""
        return self.compiled[device_index].get(key)


# The backward's partial sums of dw and db on cuda: one small kernel (dsl/device.py) adds up the
# programs' rows and casts, launched directly after its first launch per shape.
_SUMS: dict[tuple, tuple] = {}


SUM_STRIP = 32  # rows (programs' partial sums) a sum_partials program adds up per step


def sum_partials_blocks(params: int, n_cols: int) -> tuple[int, int, tuple]:
    """(BLOCK_P, BLOCK_N, grid) of ``sum_partials``: SUM_STRIP-row strips whatever the program count
    (a symbolic one too, torch.compile with dynamic shapes: nothing tests it)."""
    block_n = 32 if n_cols >= 8192 else 16
    return SUM_STRIP, block_n, (-(-n_cols // block_n), params)


def sum_partials(partials: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(params, programs, n_cols) fp32 partial sums -> (params, n_cols) in ``dtype``, summed in a fixed order.

    Strips of SUM_STRIP rows, 16 columns a program below 8192 columns, 32 from there. H200, bf16,
    2026-11-28: against every program's row at once (up to 8192 elements a program) the backward took
    0.36-0.80 µs less at 512-16384 rows of 1024-16384 columns (rmsnorm 4096x4096 30.15 -> 29.58 µs),
    1.7 less for layernorm 2048x12288 (dw and db), -0.14 to +0.10 elsewhere (4096x8192, 600x256;
    docs/bench/backward/layer-persistent.md). Alone (the partials in L2), of 32-256 rows, 16-128
    columns and 1-8 warps, 32-row strips of 4 warps were the fastest or within 0.03 µs of it at 132
    programs (1.9-4.1 µs); at 264 (rows of up to 512 columns) 64-row strips of 8 warps were (1.95 µs).
    """
    from . import device

    params, programs, n_cols = partials.shape
    index = partials.get_device()
    if (guard := other_device("cuda", index)) is not None:  # (on the partials' device, as Launcher.__call__)
        with guard:
            return sum_partials(partials, dtype)
    out = torch.empty((params, n_cols), dtype=dtype, device=partials.device)
    key = (params, programs, n_cols, dtype, index)
    fast = _SUMS.get(key)
    if fast is not None:
        launch, grid_x, function, prefix, constexprs = fast
        stream = torch._C._cuda_getCurrentRawStream(index)
        launch(grid_x, params, 1, stream, function, *prefix, partials, out, programs, n_cols, *constexprs)
        return out
    block_p, block_n, grid = sum_partials_blocks(params, n_cols)
    if INTERPRET:
        with _INTERPRETER_LOCK:
            device.sum_partials[grid](partials, out, programs, n_cols, BLOCK_P=block_p, BLOCK_N=block_n)
        return out
    compiled = device.sum_partials[grid](partials, out, programs, n_cols, BLOCK_P=block_p, BLOCK_N=block_n)
    if compiled is not None and direct_launch_ok(index):
        remember(_SUMS, key, _direct_launch(compiled, grid, (block_p, block_n)))
    return out


# ----------------------------------------------------------------------------
# Triton's private C launcher (cuda): a positional layout that changes between
# Triton versions. Used only for versions whose layout is known, and only after a
# probe kernel launched through it wrote what it should; otherwise every launch
# takes kernel[grid] (Triton's public path), after a one-time warning.

DIRECT_LAUNCH_VERSIONS = ((3, 3), (3, 6))  # inclusive (major, minor) range of the layout below; tested: 3.6


def _direct_launch(compiled, grid: tuple, constexprs: tuple):
    """The compiled kernel's C launcher and its constant leading arguments (Triton 3.3 to 3.6 layout)."""
    runner = compiled.run  # CudaLauncher: Python wrapper around the C launch function
    scratch = getattr(runner, "global_scratch_size", 0) or getattr(runner, "profile_scratch_size", 0)
    if scratch or not hasattr(runner, "launch"):
        # Kernels that need scratch memory keep Triton's wrapper, which allocates it.
        prefix = (compiled.packed_metadata, None, None, None)
        return runner, grid[0], compiled.function, prefix, constexprs
    prefix = (runner.launch_cooperative_grid, runner.launch_pdl, None, None, compiled.packed_metadata, None, None, None)
    return runner.launch, grid[0], compiled.function, prefix, constexprs


def _probe_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def normgen_launch_probe(out_ptr, value, ADD: tl.constexpr):
        tl.store(out_ptr + tl.program_id(0), value + ADD)

    return normgen_launch_probe


_DIRECT_OK: dict[int, bool] = {}


def direct_launch_ok(device_index: int) -> bool:
    """Whether the direct launch works with this Triton on this device (checked once; False: warned once)."""
    ok = _DIRECT_OK.get(device_index)
    if ok is not None:
        return ok
    if torch.cuda.is_current_stream_capturing():
        return False  # the probe synchronizes; check at the next launch outside a capture
    import triton

    version = tuple(int(part) for part in triton.__version__.split(".")[:2])
    low, high = DIRECT_LAUNCH_VERSIONS
    why = ""
    if not low <= version <= high:
        why = f"triton {triton.__version__} is outside the versions whose launcher layout normgen knows"
    else:
        try:
            out = torch.zeros(4, dtype=torch.int32, device=f"cuda:{device_index}")
            kernel = _probe_kernel()
            compiled = kernel[(1,)](out, 5, 2)
            launch, _, function, prefix, constexprs = _direct_launch(compiled, (2,), (2,))
            stream = torch._C._cuda_getCurrentRawStream(device_index)
            launch(2, 1, 1, stream, function, *prefix, out, 40, *constexprs)
            # a pointer given as an int (the op surface's cached launches pass its inputs' so)
            launch(2, 1, 1, stream, function, *prefix, out.data_ptr() + 2 * out.element_size(), 40, *constexprs)
            torch.cuda.synchronize(device_index)
            if out.tolist() != [42] * 4:
                why = f"a probe launch through it wrote {out.tolist()}, not [42, 42, 42, 42]"
        except Exception as error:  # any failure means: do not use it
            why = f"a probe launch through it failed ({type(error).__name__}: {error})"
    ok = _DIRECT_OK[device_index] = not why
    if why:
        warnings.warn(f"normgen: launching through kernel[grid] (slower host path): {why}", stacklevel=3)
    return ok


@functools.cache
def npu_entry_point(kernel):
    """triton-ascend's libentry wrapper (a faster launch cache) where it exists."""
    try:
        from triton.runtime.libentry import libentry
    except ImportError:
        return kernel
    return libentry()(kernel)
