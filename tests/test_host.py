"""The C++ host path (dsl/host.cpp, dsl/host.py).

Without a GPU: the extension builds against the installed torch (skipped where no C++ compiler
is found), declines every call it cannot launch (CPU tensors, odd arguments) with None, refuses
malformed registrations, and a failed build leaves the Python path on with a warning; a record's
parameter list follows the compiled kernel's signature (rmsnorm's, written out by hand).

On the GPU: every op's call forms (the quantized ops' q, residual out and scale too), served by
the C++ path once the Python path has made their launch, return bit for bit what the Python path
returns, alias and bump what it does, and decline what the Python fast path declines; outputs like
x keep x's strides on both paths; a CUDA graph captures its launches (a launch on any stream but
the current one would fail the capture).
Module calls: tests/test_host_modules.py.
"""

from __future__ import annotations

import itertools
import sysconfig
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import generated
from dsl import host

from .conftest import HAS_GPU, needs_compiler, op_of

OPS = [n for n in generated.__all__ if n.islower()]


@needs_compiler
def test_the_extension_declines_what_it_cannot_launch(ext):
    """CPU tensors, a mode or switch it does not know, a non-float eps: None (the Python path's call)."""
    for name in OPS:
        op = op_of(name)
        native = host.make_op(op, ext)
        x = torch.randn(3, 64)
        r = torch.randn(3, 64) if op.has_residual else None
        w = torch.ones(64) if op.has_weight else None
        mode = op.call_modes[0]
        assert native(x, r, w, None, 1e-6, mode, False, False, False) is None
        assert native(x, r, w, None, 1e-6, "sideways", False, False, False) is None
        assert native(x, r, w, None, 1, mode, False, False, False) is None
        assert native(x, r, w, None, 1e-6, mode, 0, False, False) is None
        assert native.records() == 0 and native.served() == 0
        with pytest.raises(TypeError, match="9 positional"):
            native(x, r, w)


def test_scalar_types_are_c10s():
    """The dtype numbers handed to the extension are c10::ScalarType's (as TorchScript's prim::dtype gives them)."""
    for dtype, number in host.SCALAR_TYPE.items():
        assert torch.ops.prim.dtype(torch.empty(0, dtype=dtype)) == number, dtype


@needs_compiler
def test_the_extension_refuses_malformed_registrations(ext):
    native = host.make_op(op_of("add_rmsnorm"), ext)
    with pytest.raises(ValueError, match="no such form"):
        native.add_record(99, (4, 64), 15, 0, True, 15, 1, 1, 4, 0, ())
    with pytest.raises(ValueError, match="out of range"):
        native.add_record(0, (4, 64), 15, 0, True, 15, 1, 1, 4, 0, ((7, 0, 0),))
    with pytest.raises(ValueError, match="out of range"):
        native.add_form(0, False, 9, False, False, -1, False, False, -1, -1)
    with pytest.raises(ValueError, match="needs q's storage"):
        native.add_form(0, False, 1, False, False, -1, False, False, -1, 24)
    with pytest.raises(ValueError, match="cannot be x"):
        native.add_form(0, True, 1, False, False, -1, False, False, 1, -1)
    with pytest.raises(ValueError, match="no columns"):
        native.add_record(0, (4, 0), 15, 0, True, 15, 1, 1, 4, 0, ())
    if not HAS_GPU:  # no driver: no record without the kernel's own parameter list to check it against
        with pytest.raises(RuntimeError, match="libcuda"):
            native.add_record(0, (4, 64), 15, 0, True, 15, 1, 1, 4, 0, ((0, 0, 0),))
    # a C++ exception (c10's, for a dtype code it does not know) is raised in Python; it used to leave
    # the call uncaught and end the process (std::terminate), as an allocation's out-of-memory error would
    with pytest.raises(RuntimeError, match="Unknown ScalarType"):
        native.add_record(0, (4, 64), 99, 0, True, 15, 1, 1, 4, 0, ())
    assert native.records() == 0


def test_a_failed_build_keeps_the_python_path(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "false")  # a "compiler" that fails at once
    monkeypatch.setenv("NORMGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(host, "_state", {"module": None, "thread": None, "error": None})
    monkeypatch.setattr(host, "ENABLED", True)
    with pytest.warns(UserWarning, match="C\\+\\+ host path is off, its build failed"):
        assert host.module(wait=True) is None
    assert host.failed() and host.module() is None


@needs_compiler
def test_a_cached_build_that_does_not_import_is_built_again(monkeypatch, tmp_path):
    """A cached extension that does not import (a build cut short where hosts share the cache folder,
    a damaged file) kept the C++ path off in every later process until someone deleted it (found by a
    review of the C++ code); it is built again, once. The build's own files carry a random part, so
    builds sharing a folder and a process id do not write into each other's."""
    monkeypatch.setenv("NORMGEN_CACHE_DIR", str(tmp_path))
    target = host.cache_dir() / host._tag() / f"_normgen_host{sysconfig.get_config_var('EXT_SUFFIX')}"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not an extension")
    module = host.build()
    assert hasattr(module, "Op") and target.read_bytes() != b"not an extension"
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary file left
    names = set()
    monkeypatch.setattr(host, "build_command", lambda source, built: names.add(built.name) or ["false"])
    for _ in range(2):
        with pytest.raises(RuntimeError, match="compiler failed"):
            host._compile(target.parent, target)
    assert len(names) == 2  # two builds of one process and thread: two names


# ----------------------------------------------------------------------------
# On the GPU


def _inputs(op, shape, dtype, pdtype, bias, g):
    x = torch.randn(shape, generator=g).to("cuda", dtype)
    r = torch.randn(shape, generator=g).to("cuda", dtype) if op.has_residual else None
    w = (torch.rand(shape[-1], generator=g) + 0.5).to("cuda", pdtype) if op.has_weight else None
    b = torch.randn(shape[-1], generator=g).to("cuda", pdtype) if op.has_bias and bias else None
    return x, r, w, b


def _forms(op):
    for mode, mean, rstd, inplace in itertools.product(
        op.call_modes, (False, "mean" in op.stats), (False, "rstd" in op.stats), (False, op.has_residual)
    ):
        yield mode, bool(mean), bool(rstd), bool(inplace)


SHAPES = [(1, 4096), (3, 5, 111), (57, 7338), (4, 2048)]


def _bits(t):
    """One-byte outputs (int8, fp8) compared as bytes (torch.equal has no fp8 kernel)."""
    return t.view(torch.uint8) if t.dtype.itemsize == 1 else t


@pytest.mark.gpu
@pytest.mark.parametrize("name", OPS)
def test_the_cxx_path_returns_what_the_python_path_does(name):
    assert host.module(wait=True) is not None, host._state["error"]
    op = op_of(name)
    g = torch.Generator().manual_seed(0)
    served = 0
    for shape, dtype, (mode, mean, rstd, inplace) in itertools.product(
        SHAPES, (torch.bfloat16, torch.float32), list(_forms(op))
    ):
        pdtype = torch.float32 if dtype is torch.bfloat16 and shape[-1] == 2048 else dtype
        for bias in (False, True) if op.has_bias else (False,):
            args = _inputs(op, shape, dtype, pdtype, bias, g)

            def run(native, args=args, form=(mode, mean, rstd, inplace)):
                x, r, w, b = (t.clone() if t is not None else None for t in args)
                op.native = native
                try:
                    before = (x._version, r._version if r is not None else None)
                    result = op(x, r, w, b, 1e-5, *form)
                    after = (x._version, r._version if r is not None else None)
                finally:
                    op.native = op.twin  # (the twin made during a Python call, else the one before)
                result = result if isinstance(result, tuple) else (result,)
                # which input each returned tensor is, or the first returned tensor it is
                alias = [
                    ("x" if t is x else "r" if t is r else next(j for j, u in enumerate(result) if u is t))
                    for t in result
                ]
                return [t.clone() for t in result], alias, [a != b for a, b in zip(before, after, strict=True)]

            expected = run(None)  # the Python path, which makes (and hands over) the launch
            run(None)
            native = op.twin
            assert native is not None, f"{name}: no C++ twin after two Python calls"
            count = native.served()
            got = run(native)
            assert native.served() == count + 1, f"{name} {shape} {mode, mean, rstd, inplace}: not served by C++"
            served += 1
            for e, t in zip(expected[0], got[0], strict=True):
                assert e.dtype == t.dtype and e.shape == t.shape
                assert torch.equal(_bits(e), _bits(t)), (name, shape, mode)
            assert expected[1:] == got[1:], (name, shape, mode, expected[1:], got[1:])
    assert served


@pytest.mark.gpu
def test_the_cxx_path_declines_what_the_fast_path_declines():
    """Strided rows, an unaligned pointer, a gradient, a dtype mismatch, a dispatch mode: the Python
    path serves them."""
    assert host.module(wait=True) is not None
    op = op_of("add_rmsnorm")
    fn = generated.add_rmsnorm
    x, r = (torch.randn(8, 4096, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    w = torch.ones(4096, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        fn(x, r, w)
    native = op.twin
    assert native is not None and op.native is native
    count = native.served()
    fn(x, r, w)
    assert native.served() == count + 1
    base = torch.randn(8 * 4096 + 1, device="cuda", dtype=torch.bfloat16)
    wide = torch.randn(8, 8192, device="cuda", dtype=torch.bfloat16)

    class Passing(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    def under_a_mode():
        with Passing():
            fn(x, r, w)

    declined = {
        "a dispatch mode": under_a_mode,
        "strided rows": lambda: fn(wide[:, :4096], r, w),
        "unaligned x": lambda: fn(base[1:].view(8, 4096), r, w),
        "residual in another dtype": lambda: fn(x, r.float(), w),
        "gradient": lambda: fn(x.clone().requires_grad_(), r, w),
        "eps an int": lambda: fn(x, r, w, 0),
        "eps above fp32's largest": lambda: fn(x, r, w, 1e39),
    }
    for what, call in declined.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                call()
            except Exception:  # noqa: BLE001 - a refusal by the checks is the Python path's answer
                pass
        assert native.served() == count + 1, f"{what}: served by the C++ path"


@pytest.mark.gpu
def test_outputs_have_x_strides_on_either_path():
    """A contiguous x may carry other strides than the standard ones in its size-1 dimensions
    ((N, 1, 1, C) in channels-last order): the outputs like x have x's strides, as the Python
    path's torch.empty_like(x) gives them, whichever path serves the call."""
    assert host.module(wait=True) is not None
    for name in ("rmsnorm", "add_rmsnorm"):
        op = op_of(name)
        x = torch.empty_strided((8, 1, 1, 4096), (4096, 1, 4096, 1), device="cuda", dtype=torch.bfloat16).normal_()
        r = torch.randn(8, 1, 1, 4096, device="cuda", dtype=torch.bfloat16) if op.has_residual else None
        w = torch.ones(4096, device="cuda", dtype=torch.bfloat16)
        assert x.is_contiguous() and x.stride() != (4096, 4096, 4096, 1)
        served = op.twin.served() if op.twin is not None else 0
        results = []
        for _ in range(4):
            result = op(x, r, w, None, 1e-6, op.call_modes[0], False, False, False)
            results.append(result if isinstance(result, tuple) else (result,))
        assert op.twin is not None and op.twin.served() > served, f"{name}: the C++ path served no call"
        for result in results:
            for t in result:
                assert t.stride() == x.stride(), (name, t.stride())
            for t, u in zip(result, results[0], strict=True):
                assert torch.equal(t, u), name


@pytest.mark.gpu
def test_a_cuda_graph_captures_the_cxx_launch():
    assert host.module(wait=True) is not None
    op = op_of("rmsnorm")
    x = torch.randn(16, 4096, device="cuda", dtype=torch.bfloat16)
    w = torch.rand(4096, device="cuda", dtype=torch.bfloat16)
    expected = generated.rmsnorm(x, w)
    for _ in range(2):
        generated.rmsnorm(x, w)
    count = op.native.served()
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            y = generated.rmsnorm(x, w)
    assert op.native.served() == count + 1
    y.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, expected)


def test_a_records_parameters_follow_the_compiled_kernels_signature():
    """rmsnorm's kernel, written out by hand from its text: (X_ptr, X_row_stride, W_ptr, Y_ptr,
    Y_row_stride, RSTD_ptr, n_rows, n_cols, eps, STORE_RSTD, then the launcher's six constexprs).
    Triton passes neither constexprs nor what it specialized (None, ints equal to 1)."""
    from types import SimpleNamespace

    from dsl.launch_layout import launch_tail

    op = op_of("rmsnorm")
    _, layouts = op.kernel_launch("cuda")
    form = op._forms[(None, False, True, False)]  # return_rstd
    rec = SimpleNamespace(
        args=layouts[None].args, tail=launch_tail((64,) * 4, 3, 64, False, False, True, torch.bfloat16)
    )
    constexprs = (1, 64, False, True, False, 8)
    pointer, i32, fp32, constexpr = "*bf16", "i32", "fp32", "constexpr"
    signature = [pointer, i32, pointer, pointer, i32, "*fp32", i32, i32, fp32] + [constexpr] * 7

    def spec(form=form):
        kernel = SimpleNamespace(src=SimpleNamespace(signature=dict(enumerate(signature))))
        return host.param_spec(op, form, rec, kernel, constexprs, True)

    x, w, out, rstd, eps = (host.SLOTS.index(n) for n in ("x", "weight", "out", "rstd", "eps"))
    expected = [(host.PTR, x, 0), (host.I32, 0, 64), (host.PTR, w, 0), (host.PTR, out, 0), (host.I32, 0, 64)]
    expected += [(host.PTR, rstd, 0), (host.I32, 0, 3), (host.I32, 0, 64), (host.F32, eps, 0)]
    assert spec() == tuple(expected)
    # one row: Triton specialized n_rows (== 1), so it is not passed
    rec.tail = launch_tail((64,) * 4, 1, 64, False, False, True, torch.bfloat16)
    signature[6] = constexpr
    expected.pop(6)
    assert spec() == tuple(expected)
    # the kernel was compiled with an rstd pointer the form does not allocate: refused
    plain = op._forms[(None, False, False, False)]
    with pytest.raises(ValueError, match="parameter rstd"):
        spec(plain)
    # a 64-bit stride, and a parameter type host.cpp does not pass
    signature[1] = "i64"
    assert spec()[1] == (host.I64, 0, 64)
    signature[8] = "fp16"
    with pytest.raises(ValueError, match="eps of type fp16"):
        spec()


@pytest.mark.parametrize("norm_pos", ["pre", "post"])
@pytest.mark.parametrize("inplace", [False, True])
def test_a_quantized_records_parameters_take_its_residual_out_and_scale(norm_pos, inplace):
    """add_rmsnorm_int8's kernel, written out by hand from its text: (X_ptr, X_row_stride, R_ptr,
    R_row_stride, W_ptr, Y_ptr, Y_row_stride, RES_ptr, RES_row_stride, SCALE_ptr, n_rows, n_cols,
    eps, PRE, then the launcher's seven constexprs). Every form writes the residual out (s in pre
    mode, the unquantized y in post mode) and the scale, and the twin registers each form so."""
    from types import SimpleNamespace

    from dsl.launch_layout import launch_tail

    op = op_of("add_rmsnorm_int8")
    _, layouts = op.kernel_launch("cuda")
    form = op._forms[(norm_pos, False, False, inplace)]
    assert not form.out_is_x  # q is never x
    assert form.residual_out_is == (("residual" if norm_pos == "pre" else "x") if inplace else "new")
    rec = SimpleNamespace(
        args=layouts[norm_pos].args, tail=launch_tail((64,) * 4, 3, 64, False, False, False, torch.bfloat16)
    )
    constexprs = (1, 64, False, True, False, 8, True)
    pointer, i32, fp32, constexpr = "*bf16", "i32", "fp32", "constexpr"
    signature = [pointer, i32, pointer, i32, pointer, "*i8", i32, pointer, i32, "*fp32", i32, i32, fp32]
    signature += [constexpr] * 8
    kernel = SimpleNamespace(src=SimpleNamespace(signature=dict(enumerate(signature))))
    x, r, w, out, res, scale, eps = (
        host.SLOTS.index(n) for n in ("x", "residual", "weight", "out", "residual_out", "scale", "eps")
    )
    expected = [(host.PTR, x, 0), (host.I32, 0, 64), (host.PTR, r, 0), (host.I32, 0, 64), (host.PTR, w, 0)]
    expected += [(host.PTR, out, 0), (host.I32, 0, 64), (host.PTR, res, 0), (host.I32, 0, 64)]
    expected += [(host.PTR, scale, 0), (host.I32, 0, 3), (host.I32, 0, 64), (host.F32, eps, 0)]
    assert host.param_spec(op, form, rec, kernel, constexprs, True) == tuple(expected)


def test_two_threads_make_one_twin(monkeypatch):
    """Two threads handing an op's first records to C++ at once make one twin between them: a second
    twin would replace the first as the op's C++ path, and the records the first took would stay on
    the Python path for good."""
    import threading
    import time
    import types

    made = []

    def make_op(op):
        twin = object()
        time.sleep(0.05)  # (making the twin takes a while: the other thread arrives meanwhile)
        made.append(twin)
        return twin

    monkeypatch.setattr(host, "make_op", make_op)
    op = types.SimpleNamespace(twin=None, native=None)
    # (a record without a compiled kernel: register returns after the twin)
    launcher = types.SimpleNamespace(compiled_kernel=lambda *a: None)
    rec = types.SimpleNamespace(launcher=launcher, key=(), device_index=0, direct=None)
    start, results = threading.Barrier(2), []

    def hand_over():
        start.wait()
        results.append(host.register(op, None, rec, (4, 64), torch.float32, torch.device("cuda", 0), True, None))

    threads = [threading.Thread(target=hand_over) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [False, False]  # (both returned: no thread failed)
    assert len(made) == 1 and op.twin is op.native is made[0]


@pytest.mark.gpu
def test_a_threads_first_call_is_served_without_a_cuda_context():
    """A new thread has no CUDA context current until something makes one current there, and torch's
    calls need not (a cached allocation makes no CUDA call): the C++ path's first launch on such a
    thread went to cuLaunchKernel without one and raised "CUresult 201" (found by a review of the C++
    code; H200, 2026-11-29). It declines that call now: the Python path's launch (Triton's launcher)
    makes the device's context current, and the thread's later calls are served in C++."""
    import threading

    assert host.module(wait=True) is not None, host._state["error"]
    op = op_of("add_rmsnorm")
    g = torch.Generator().manual_seed(0)
    x, r = (torch.randn(8, 4096, generator=g).to("cuda", torch.bfloat16) for _ in range(2))
    w = torch.ones(4096, device="cuda", dtype=torch.bfloat16)
    expected = generated.add_rmsnorm(x, r, w)
    for _ in range(20):  # until the C++ twin serves this call on this thread
        generated.add_rmsnorm(x, r, w)
        if op.native is not None and op.native.served() > 0:
            break
    assert op.native is not None and op.native.served() > 0
    served, results, errors = op.native.served(), [], []

    def calls():
        try:
            results.extend(generated.add_rmsnorm(x, r, w) for _ in range(3))
            torch.cuda.synchronize()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=calls)
    thread.start()
    thread.join()
    assert not errors, errors
    assert len(results) == 3 and all(torch.equal(a, b) for out in results for a, b in zip(out, expected, strict=True))
    assert op.native.served() > served  # its later calls were served in C++


@pytest.mark.gpu
def test_shapes_come_back_to_the_cxx_path_after_its_records_are_cleared(monkeypatch):
    """At CACHE_LIMIT records the C++ twin drops them all; the Python records it had served kept
    saying so, and their shapes stayed on the Python path for good (found by a review of the C++
    code). They are registered again at their next direct launch now."""
    assert host.module(wait=True) is not None, host._state["error"]
    op = op_of("rmsnorm")
    w = torch.ones(256, device="cuda")
    shapes = [(rows, 256) for rows in (3, 5, 7)]
    monkeypatch.setattr(host, "RECORD_LIMIT", 2)  # (the Python records' caches keep theirs)

    def served_after(shape, calls=4):
        x = torch.randn(shape, device="cuda")
        before = op.native.served() if op.native is not None else 0
        for _ in range(calls):
            generated.rmsnorm(x, w)
        return op.native.served() - before

    for shape in shapes:  # the third's registration clears the first two
        for _ in range(20):
            if served_after(shape) > 0:
                break
        assert served_after(shape) == 4, shape  # each served in C++ once registered
    assert op.native.records() <= 2
    assert served_after(shapes[0], calls=6) >= 4  # registered again, then served


_FAILED_FIRST_REGISTRATION = r"""
import warnings, torch
import generated
from dsl import host
from tests.conftest import op_of
assert host.module(wait=True) is not None, host._state["error"]
op = op_of("rmsnorm")
w = torch.ones(64, device="cuda", dtype=torch.bfloat16)
x9 = torch.randn((1,) * 7 + (2, 64), device="cuda", dtype=torch.bfloat16)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(2):  # the second call's direct launch registers the record, which the twin refuses
        generated.rmsnorm(x9, w)
assert op.twin is not None and op.twin.records() == 0, "the first registration did not fail as planned"
assert any("keeps the Python host path" in str(c.message) for c in caught), [str(c.message) for c in caught]
x = torch.randn(4, 64, device="cuda", dtype=torch.bfloat16)
ys = [generated.rmsnorm(x, w) for _ in range(6)]
op.native = None  # the Python path's answer
assert all(torch.equal(y, generated.rmsnorm(x, w)) for y in ys)
print("served", op.twin.served(), "records", op.twin.records())
"""


@pytest.mark.gpu
def test_a_twin_whose_first_registration_failed_does_not_crash(tmp_path):
    """The driver's functions were loaded by a twin's first record: a twin whose first registration
    failed (here: x of rank 9, more than the C++ path takes) served its next call through a null
    cuCtxGetCurrent, and the process died (SIGSEGV; found by a review of the C++ code, seen on an
    H200). It declines until the driver is loaded, then serves. A fresh process: the driver, once
    loaded, stays loaded."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NORMGEN_CACHE_DIR": os.environ.get("NORMGEN_CACHE_DIR") or str(tmp_path)}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    child = subprocess.run(
        [sys.executable, "-c", _FAILED_FIRST_REGISTRATION],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, (child.returncode, child.stdout[-2000:], child.stderr[-3000:])
    served, records = (int(v) for v in child.stdout.split()[1::2][-2:])
    assert records == 1 and served > 0, child.stdout  # then registered, and served in C++
