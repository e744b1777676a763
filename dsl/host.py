"""The eager host path in C++ (hand-written): building ``dsl/host.cpp`` and feeding it what the Python path decided.

On cuda, a common eager call's host work (prove the inputs, allocate the outputs, launch the
kernel) costs a few microseconds of Python bytecode on top of the launch itself. ``host.cpp``
does that work in C++ for the calls it can prove, and returns None for every other call, which
then takes the Python path (``dsl/surface.py``) as before. It decides nothing itself: the
Python fast path registers with it, per call form and shape, the launch it has already decided
and made once (the compiled kernel, its grid and warps, where each parameter's value comes from).

The extension is built on first use, the way Triton builds its own C launcher: by the system's
C++ compiler, against the installed torch's headers and libraries, in a background thread (the
calls meanwhile take the Python path), and cached under ``$NORMGEN_CACHE_DIR`` (default
``~/.cache/normgen``), keyed by the source, torch's and Python's versions. Not at install: a
build step would need torch in pip's isolated build environment (a multi-GB CUDA wheel) and
would be stale after a torch upgrade. Where no compiler or header is found, the build fails
once with a warning and every call keeps the Python path. ``NORMGEN_HOST=python`` turns it off.

A record's parameters are checked against the kernel's own (``cuFuncGetParamInfo``: count and
sizes) before it is used; a mismatch refuses the record, and the Python path keeps serving it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import warnings
from pathlib import Path

import torch

from . import modules, runtime

_HOST = os.environ.get("NORMGEN_HOST", "cxx")
if _HOST not in ("cxx", "python"):  # (a typo must not leave the default in place silently)
    raise ValueError(f"NORMGEN_HOST must be 'cxx' or 'python', got {_HOST!r}")
ENABLED = _HOST == "cxx"
RECORD_LIMIT = runtime.CACHE_LIMIT  # records a twin holds; at the limit it drops them all and starts again
SOURCE = Path(__file__).with_name("host.cpp")
SOURCES = (SOURCE, SOURCE.with_name("host_serve.h"))  # what the build reads: both key its cache

# the C++ side's enums (host.cpp)
SLOTS = ("x", "residual", "weight", "bias", "out", "residual_out", "scale", "mean", "rstd", "eps")
PTR, F32, I32, I64 = range(4)
RESIDUAL_OUT = {None: 0, "new": 1, "out": 2, "x": 3, "residual": 4}
SCALAR_TYPE = {  # c10::ScalarType's values
    torch.uint8: 0,
    torch.int8: 1,
    torch.float16: 5,
    torch.float32: 6,
    torch.bfloat16: 15,
    torch.float8_e4m3fn: 24,
}

_lock = threading.Lock()
_state = {"module": None, "thread": None, "error": None}


def cache_dir() -> Path:
    return Path(os.environ.get("NORMGEN_CACHE_DIR") or Path.home() / ".cache" / "normgen") / "host"


def _tag() -> str:
    sources = tuple(source.read_bytes() for source in SOURCES)
    parts = (*sources, torch.__version__, str(torch.version.git_version), sys.version, _compiler())
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


def _compiler() -> str:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++") or ""


def build_command(source: Path, target: Path) -> list[str]:
    """The compiler's command line for the extension against this torch and Python."""
    root = Path(torch.__file__).parent
    lib = root / "lib"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        _compiler(),
        "-O2",
        "-std=c++17",
        "-shared",
        "-fPIC",
        "-w",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-I{root / 'include'}",
        f"-I{root / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
        f"-I{sysconfig.get_paths()['include']}",
        str(source),
        "-o",
        str(target),
        f"-L{lib}",
        f"-Wl,-rpath,{lib}",
        "-lc10",
        "-ltorch_cpu",
        "-ltorch_python",
        "-ldl",
    ]


def build() -> object:
    """Build (or find in the cache) and import the extension; raises on failure. A cached file that
    does not import (a build cut short where the cache is shared, a damaged file) is built again, once."""
    if not _compiler():
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    directory = cache_dir() / _tag()
    target = directory / f"_normgen_host{sysconfig.get_config_var('EXT_SUFFIX')}"
    cached = target.exists()
    if not cached:
        _compile(directory, target)
    try:
        return _import(target)
    except ImportError:
        if not cached:
            raise
        target.unlink(missing_ok=True)
        _compile(directory, target)
        return _import(target)


def _import(target: Path) -> object:
    spec = importlib.util.spec_from_file_location("_normgen_host", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile(directory: Path, target: Path) -> None:
    """Compile the extension to ``target`` through a file of this build's own, renamed into place."""
    directory.mkdir(parents=True, exist_ok=True)
    # The compiler and the rename run in a session of their own: a process that exits before the
    # build ends (a short script) leaves it to finish and fill the cache, not half done. The names of
    # its files are this build's alone (hosts sharing a cache folder may share a process id).
    stem = f".{target.name}.{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(8)}"
    built, log = directory / f"{stem}.tmp", directory / f"{stem}.log"
    script = f"{shlex.join(build_command(SOURCE, built))} 2>{shlex.quote(str(log))}"
    script += f" && mv -f {shlex.quote(str(built))} {shlex.quote(str(target))} && rm -f {shlex.quote(str(log))}"
    status = subprocess.Popen(["sh", "-c", script], start_new_session=True).wait()
    if status != 0:
        errors = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        built.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
        raise RuntimeError(f"the C++ compiler failed (exit {status}):\n{errors}")


def _build_in_background() -> None:
    try:
        module = build()
    except Exception as error:  # any failure: the Python path stays
        _state["error"] = f"{type(error).__name__}: {error}"
        warnings.warn(f"normgen: the C++ host path is off, its build failed ({_state['error']})", stacklevel=1)
        return
    _state["module"] = module


def module(wait: bool = False):
    """The built extension, or None while it builds, where it failed or is off; the first call starts the build.

    ``wait``: block until the build ends (benchmarks and tests).
    """
    if _state["module"] is not None or not ENABLED or _state["error"] is not None:
        return _state["module"]
    with _lock:
        thread = _state["thread"]
        if thread is None:
            thread = _state["thread"] = threading.Thread(target=_build_in_background, name="normgen-host", daemon=True)
            thread.start()
    if wait:
        thread.join()
    return _state["module"]


def failed() -> bool:
    """The build failed or the path is off: no record will ever be registered."""
    return not ENABLED or _state["error"] is not None


class _Slot:
    """A stand-in for one of the launch environment's per-call values (see ``param_spec``)."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


_STANDINS = tuple(_Slot(i) for i in range(len(SLOTS)))


def form_index(op, form) -> int:
    """A call form's index on the C++ side: mode * 4 + return_mean * 2 + return_rstd (+ 4 * modes in place)."""
    mode = op.call_modes.index(form.norm_pos)
    return mode * 4 + form.mean * 2 + form.rstd + (4 * len(op.call_modes) if form.inplace else 0)


def make_op(op, ext=None):
    """The C++ twin of an ``Op`` (dsl/surface.py), with its call forms; None while the extension
    ``ext``, by default the built one, is not there."""
    ext = ext or module()
    if ext is None:
        return None
    native = ext.Op(op.has_residual, op.has_weight, op.has_bias, op.call_modes, (torch.Tensor, torch.nn.Parameter))
    base = modules.AddNorm if op.has_residual else modules.Norm
    native.set_module(vars(torch.nn.modules.module), ("forward", base.forward, "_run", modules.Norm._run))
    modules.serve_module_calls()
    stats = -1 if op.stats_dtype is None else SCALAR_TYPE[op.stats_dtype]
    storage = -1 if op.quant_storage is None else SCALAR_TYPE[op.quant_storage]
    view = -1 if op.quant_dtype is op.quant_storage else SCALAR_TYPE[op.quant_dtype]
    for form in op._forms.values():
        native.add_form(
            form_index(op, form),
            form.out_is_x,
            RESIDUAL_OUT[form.residual_out_is],
            form.mean,
            form.rstd,
            stats,
            form.write_x,
            form.write_residual,
            storage,
            view,
        )
    return native


def param_spec(op, form, rec, compiled, constexprs: tuple, bias_none: bool) -> tuple:
    """(kind, slot, value) per runtime parameter of the compiled kernel, in order: where host.cpp takes each value.

    The kernel's arguments come from the record's argument getter over the launch environment,
    its per-call values replaced by stand-ins; Triton's signature of the compiled kernel says
    which parameters it passes (constexprs, specialized values and None are not passed) and
    their types. Raises ValueError for anything host.cpp does not launch.
    """
    args = rec.args(_STANDINS + rec.tail) + constexprs
    signature = tuple(compiled.src.signature.values())
    if len(args) != len(signature):
        raise ValueError(f"{len(args)} arguments for {len(signature)} kernel parameters")
    given = {"x", "out"}
    given.update(name for name, on in (("residual", op.has_residual), ("weight", op.has_weight)) if on)
    given.update(name for name, on in (("mean", form.mean), ("rstd", form.rstd)) if on)
    if form.residual_out_is is not None:
        given.add("residual_out")
    if op.quant_storage is not None:
        given.add("scale")
    if op.has_bias and not bias_none:
        given.add("bias")
    spec = []
    for value, kind in zip(args, signature, strict=True):
        if kind == "constexpr":
            continue
        if isinstance(value, _Slot):
            name = SLOTS[value.index]
            if name == "eps" and kind == "fp32":
                spec.append((F32, value.index, 0))
            elif name in given and kind.startswith("*"):
                spec.append((PTR, value.index, 0))
            else:
                raise ValueError(f"parameter {name} of type {kind}")
        elif type(value) is int and kind in ("i32", "i64"):
            spec.append((I32 if kind == "i32" else I64, 0, value))
        else:
            raise ValueError(f"a constant {value!r} of type {kind}")
    return tuple(spec)


_TWIN_LOCK = threading.Lock()


def register(op, form, rec, shape, dtype, device, bias_none: bool, pdtype) -> bool:
    """Hand a record's launch to the op's C++ twin; False where it stays on the Python path (for good)."""
    native = op.twin
    if native is None:
        with _TWIN_LOCK:  # one twin an op: a second, made by another thread, would drop the first's records
            native = op.twin
            if native is None:
                native = op.twin = make_op(op)
                if native is None:
                    return False
                op.native = native
    launcher = rec.launcher
    compiled = launcher.compiled_kernel(rec.key, rec.device_index)
    direct = rec.direct
    if compiled is None or direct is None:
        return False
    metadata = compiled.metadata
    run = compiled.run
    if (
        getattr(metadata, "num_ctas", 1) != 1
        or getattr(run, "launch_cooperative_grid", False)
        or getattr(run, "launch_pdl", False)
        or getattr(run, "global_scratch_size", 0)
        or getattr(run, "profile_scratch_size", 0)
    ):
        return False
    try:
        spec = param_spec(op, form, rec, compiled, direct[4], bias_none)
        if native.records() >= RECORD_LIMIT:
            native.clear()
            # the Python records it served are to be registered again at their next direct launch
            # (else those shapes stayed on the Python path for good)
            for each in list(op._forms.values()):
                for record in list(each.records.values()):
                    if record.native:
                        record.native = None
        native.add_record(
            form_index(op, form),
            tuple(shape),
            SCALAR_TYPE[dtype],
            device.index,
            bias_none,
            SCALAR_TYPE[pdtype],
            compiled.function,
            direct[1],
            metadata.num_warps,
            metadata.shared,
            spec,
        )
    except (ValueError, KeyError, RuntimeError) as error:
        warnings.warn(f"normgen: {op.name} keeps the Python host path at {tuple(shape)}: {error}", stacklevel=3)
        return False
    return True
