"""Test configuration.

TRITON_INTERPRET must be set before the generated modules are imported: on a
machine without a GPU it defaults to 1, so CPU tensors run the kernels in
Triton's interpreter; on a GPU machine it defaults to 0 and the `gpu` tests
run the kernels on the device. NORMGEN_INTERPRET_TARGET (cuda or npu) picks
which target's kernels the interpreter runs.

At the end pytest prints one line saying what ran where: how many tests ran
kernels on the GPU or in the cuda/npu interpreter, how many ran ops on the
generated PyTorch reference, how many called no op at all (parser, planner,
build). The npu run in .venv-npu (scripts/npu_checks.sh) prints its own line.
"""

import importlib
import os

import torch

os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")
# The C++ host path (dsl/host.py) serves only cuda tensors: on a machine without a GPU no test
# but tests/test_host.py's builds it (a build is 15 s of compiler time per process).
os.environ.setdefault("NORMGEN_HOST", "cxx" if torch.cuda.is_available() else "python")

import pytest  # noqa: E402

from dsl import host, runtime  # noqa: E402

from . import interpreter_bf16_casts, interpreter_folds, interpreter_lang_once, interpreter_np_dtypes  # noqa: E402

if runtime.INTERPRET:
    interpreter_folds.install()  # triton-ascend's max/min reductions in numpy (nothing under upstream Triton)
    interpreter_lang_once.install()  # no re-patching of triton.language where it is patched already
    interpreter_bf16_casts.install()  # bf16 <-> fp32 casts by a shift where that gives the interpreter's bits
    interpreter_np_dtypes.install()  # the interpreter's numpy type of a Triton type, looked up once per type

HAS_GPU = torch.cuda.is_available() and not runtime.INTERPRET

if not torch.cuda.is_available():
    GPU_SKIP = "no CUDA GPU on this machine (torch.cuda.is_available() is False)"
else:
    GPU_SKIP = "TRITON_INTERPRET=1 is set: kernels run in the CPU interpreter; unset it to run the gpu tests"


# The C++ host path's tests (tests/test_host.py, tests/test_host_modules.py): its extension, built
# against the installed torch where a compiler is found, and an op's ``Op``.
needs_compiler = pytest.mark.skipif(not host._compiler(), reason="no C++ compiler on this machine")


@pytest.fixture(scope="session")
def ext():
    """dsl/host.cpp's extension, built (or found in the cache)."""
    return host.build()


def op_of(name: str):
    """The ``Op`` of the generated op ``name`` (dsl/surface.py)."""
    return importlib.import_module(f"generated.{name}").OP


@pytest.fixture(params=["interpreter", "reference"])
def cpu_path(request, monkeypatch):
    """Run CPU tensors through the kernels in the interpreter, or through the generated reference."""
    if request.param == "interpreter" and not runtime.INTERPRET:
        pytest.skip("needs TRITON_INTERPRET=1 (the CPU interpreter)")
    if request.param == "reference":
        monkeypatch.setattr(runtime, "INTERPRET", False)
    return request.param


@pytest.fixture
def reference_path(monkeypatch):
    """CPU tensors run the generated reference (what a CPU user gets), not the kernels in the interpreter."""
    monkeypatch.setattr(runtime, "INTERPRET", False)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason=GPU_SKIP)
    for item in items:
        if "gpu" in item.keywords and not HAS_GPU:
            item.add_marker(skip_gpu)


# -- what ran where ---------------------------------------------------------------
# The generated ops ask runtime.kernel_target where a non-CUDA tensor runs: a
# target's kernels (in the interpreter, for CPU tensors) or, with None, the
# PyTorch reference. Recording its answers per test tells what each test ran.

PLACES = ("GPU", "npu interpreter", "cuda interpreter", "reference")  # a test counts once, under the first it used
_used: set[str] = set()
_kernel_target = runtime.kernel_target


def _recording_kernel_target(device: torch.device):
    target = _kernel_target(device)
    if device.type in ("cpu", "cuda"):  # (tests/test_surface.py's stand-in npu tensors launch nothing)
        _used.add("reference" if target is None else f"{target} interpreter" if device.type == "cpu" else "GPU")
    return target


runtime.kernel_target = _recording_kernel_target


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    _used.clear()
    try:
        return (yield)
    finally:
        used = set(_used) | ({"GPU"} if "gpu" in item.keywords else set())
        place = next((p for p in PLACES if p in used), "no op")
        item.user_properties.append(("normgen_ran", place))  # travels in the report, also from xdist workers


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts = dict.fromkeys((*PLACES, "no op"), 0)
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", None) != "call":
                continue
            properties = dict(report.user_properties)
            if "normgen_ran" in properties:
                counts[properties["normgen_ran"]] += 1
    words = {
        "GPU": "ran kernels on the GPU",
        "npu interpreter": "ran npu kernels in triton-ascend's interpreter",
        "cuda interpreter": "ran cuda kernels in Triton's interpreter",
        "reference": "ran ops on the PyTorch reference",
        "no op": "called no op (specs, planner, build, lowering)",
    }
    parts = [f"{n} {words[place]}" for place, n in counts.items() if n or place in ("GPU", "no op")]
    skipped = len(terminalreporter.stats.get("skipped", []))
    line = f"normgen: of the tests that ran, {', '.join(parts)}; {skipped} skipped"
    terminalreporter.write_line(line)
