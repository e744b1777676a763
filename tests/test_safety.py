"""Calls that must fail loudly or stay correct at the edges (issue "Hardening").

The kernel-path tests run in Triton's interpreter on CPU (the cuda kernels here,
the npu kernels in the triton-ascend venv: their names hold "interpreter" so the
npu run selects them), the `reference` tests on the generated PyTorch reference,
and the `gpu` tests on CUDA.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest
import torch

import generated
from dsl import runtime
from dsl.runtime import NormgenError

from .cases import SPECS, call, make_inputs

needs_interpreter = pytest.mark.skipif(not runtime.INTERPRET, reason="needs TRITON_INTERPRET=1 (the CPU interpreter)")


def _inputs(name, device="cpu", dtype=torch.float32, rows=3, width=128):
    return make_inputs(SPECS[name], rows, width, dtype, device, "2d")


def _mode(spec):
    return spec.residual[0].value if spec.has_residual else None


# ----------------------------------------------------------------------------
# Gradients: refused by the ops without a backward (quantized outputs have none;
# tests/test_backward.py checks the gradients of the others)

NO_BACKWARD = sorted(name for name, spec in SPECS.items() if not spec.has_backward)


def _check_grad_refused(name, device):
    spec = SPECS[name]
    for arg in ["x", *(["weight"] if spec.has_weight else []), *(["bias"] if spec.has_bias else [])]:
        inputs = _inputs(name, device)
        inputs[arg] = inputs[arg].clone().requires_grad_()
        why = r"\(its quantized output has no gradient\)"
        with pytest.raises(NormgenError, match=rf"{name} has no backward {why}: {arg} requires grad"):
            call(spec, inputs, _mode(spec))
        # without grad mode the same call runs and its outputs carry no graph
        for context in (torch.no_grad, torch.inference_mode):
            with context():
                out = call(spec, inputs, _mode(spec))
            assert not any(t.requires_grad for t in out.values() if isinstance(t, torch.Tensor))


@pytest.mark.parametrize("name", NO_BACKWARD)
def test_grad_refused_on_cpu_paths(name, cpu_path):
    _check_grad_refused(name, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name", NO_BACKWARD)
def test_grad_refused_gpu(name):
    _check_grad_refused(name, "cuda")


# Module classes of the generated package, by name
_MODULES = sorted(
    (c for c in (getattr(generated, n) for n in generated.__all__ if n[0].isupper()) if hasattr(c, "op")),
    key=lambda c: c.__name__,
)


def _warm_inputs(name, device):
    """The op's inputs, after three calls with them: the fast path's record, its direct launch and (cuda)
    the C++ twin are made first, so that a refused call that follows is refused on every path."""
    spec = SPECS[name]
    inputs = _inputs(name, device)
    for _ in range(3):
        call(spec, inputs, _mode(spec))
    return inputs


def _warm_layer(name, inputs, device):
    """(the op's module, without gradients, after three calls; its call's arguments from ``inputs``)."""
    module = next(c for c in _MODULES if c.op.name == name)
    layer = module(inputs["x"].shape[-1]).to(device).requires_grad_(False)
    args = (inputs["x"], inputs["residual"]) if SPECS[name].has_residual else (inputs["x"],)
    for _ in range(3):
        layer(*args)
    return layer, args


# Forward-mode AD (torch.autograd.forward_ad): a dual tensor needs no gradient, so every path took
# it and the kernels' outputs came back without a tangent; refused instead, on every path.


def _check_tangent_refused(name, device):
    import torch.autograd.forward_ad as fwAD

    spec = SPECS[name]
    inputs = _warm_inputs(name, device)
    for arg in inputs:
        with fwAD.dual_level():
            dual = dict(inputs, **{arg: fwAD.make_dual(inputs[arg], torch.ones_like(inputs[arg]))})
            with pytest.raises(NormgenError, match=rf"{name}: {arg} carries a forward-mode AD tangent"):
                call(spec, dual, _mode(spec))
    layer, args = _warm_layer(name, inputs, device)
    with fwAD.dual_level():
        with pytest.raises(NormgenError, match="forward-mode AD tangent"):
            layer(fwAD.make_dual(args[0], torch.ones_like(args[0])), *args[1:])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_forward_ad_tangents_refused_on_cpu_paths(name, cpu_path):
    _check_tangent_refused(name, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(SPECS))
def test_forward_ad_tangents_refused_gpu(name):
    _check_tangent_refused(name, "cuda")


# A lazily negated view (torch's negative bit: torch._neg_view, the imaginary part of a conjugated
# complex tensor) holds the negatives of its values in memory. The kernels read the memory as it is:
# every kernel path returned wrong values without an error (found by an audit); refused instead.


def _check_negated_refused(name, device):
    spec = SPECS[name]
    inputs = _warm_inputs(name, device)
    for arg in inputs:
        negated = dict(inputs, **{arg: torch._neg_view(-inputs[arg])})
        assert negated[arg].is_neg() and torch.equal(negated[arg], inputs[arg])  # the same values
        with pytest.raises(NormgenError, match=rf"{name}: {arg} is a lazily negated view"):
            call(spec, negated, _mode(spec))
        if spec.has_residual and arg in ("x", "residual"):
            with pytest.raises(NormgenError, match=rf"{name}: {arg} is a lazily negated view"):
                call(spec, negated, _mode(spec), inplace=True)
    layer, args = _warm_layer(name, inputs, device)
    with pytest.raises(NormgenError, match="x is a lazily negated view"):
        layer(torch._neg_view(-args[0]), *args[1:])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_negated_views_refused_on_cpu_paths(name, cpu_path):
    _check_negated_refused(name, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(SPECS))
def test_negated_views_refused_gpu(name):
    _check_negated_refused(name, "cuda")


def _module_and_args(device):
    module = generated.AddRMSNormInt8(64).to(device)  # its weight is a Parameter: it requires grad
    x = torch.randn(2, 64, device=device)
    return module, (x, torch.randn_like(x))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_grad_refused_for_modules_and_under_compile(device):
    module, args = _module_and_args(device)
    refused = r"add_rmsnorm_int8 has no backward \(its quantized output has no gradient\): weight requires grad"
    with pytest.raises(NormgenError, match=refused):
        module(*args)
    torch._dynamo.reset()
    with pytest.raises(NormgenError, match=refused):
        torch.compile(module)(*args)
    torch._dynamo.reset()
    # fullgraph=True cannot fall back to eager: dynamo reports the op's error as the reason it stopped
    with pytest.raises(Exception, match=refused):
        torch.compile(module, fullgraph=True)(*args)
    torch._dynamo.reset()
    with torch.no_grad():
        expected = module(*args)
        actual = torch.compile(module, fullgraph=True)(*args)
    torch.testing.assert_close(actual, expected)


# ----------------------------------------------------------------------------
# Quantized outputs keep NaN


def _check_nan_rows(name, device):
    spec = SPECS[name]
    inputs = _inputs(name, device, rows=5, width=4097)  # multi pass on every target
    x = inputs["x"].clone()
    x[1, 7] = float("nan")
    x[3, 4000] = float("nan")
    inputs["x"] = x
    out = call(spec, inputs, _mode(spec))
    q, scale = out["q"], out["scale"]
    nan_rows = torch.tensor([False, True, False, True, False], device=device)
    assert torch.equal(torch.isnan(scale[:, 0]), nan_rows), f"{name}: scale {scale.flatten().tolist()}"
    if q.dtype is torch.int8:
        assert (q[nan_rows] == 0).all(), f"{name}: int8 rows with NaN must be 0 (and their scale NaN)"
    else:
        assert torch.isnan(q[nan_rows].float()).all(), f"{name}: fp8 rows with NaN must be NaN"
    clean = _inputs(name, device, rows=5, width=4097)
    clean["x"] = torch.where(torch.isnan(x), 0.0, x)
    clean_out = call(spec, clean, _mode(spec))
    keep = ~nan_rows
    assert torch.equal(out["scale"][keep], clean_out["scale"][keep])
    assert torch.equal(out["q"][keep].view(torch.uint8), clean_out["q"][keep].view(torch.uint8))


QUANTIZED = sorted(name for name, spec in SPECS.items() if spec.is_quantized)


@pytest.mark.parametrize("name", QUANTIZED)
def test_quantized_nan_rows_on_cpu_paths(name, cpu_path):
    _check_nan_rows(name, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name", QUANTIZED)
def test_quantized_nan_rows_gpu(name):
    _check_nan_rows(name, "cuda")


@needs_interpreter
@pytest.mark.parametrize("width", [128, 4097])
def test_quantized_nan_single_row_interpreter(width):
    """Single- and multi-pass kernels: one NaN in a row makes its scale NaN."""
    spec = SPECS["add_rmsnorm_fp8"]
    inputs = make_inputs(spec, 2, width, torch.float32, "cpu", "2d")
    inputs["residual"][0, width - 1] = float("nan")
    out = call(spec, inputs, "pre")
    assert torch.isnan(out["scale"][0]).all() and not torch.isnan(out["scale"][1]).any()


# ----------------------------------------------------------------------------
# In place: version counters and inference tensors, as torch's in-place ops


def _check_inplace_versions(device):
    spec = SPECS["add_rmsnorm"]
    for mode, written in (("pre", ("x", "residual")), ("post", ("x",))):
        inputs = _inputs("add_rmsnorm", device)
        before = {k: t._version for k, t in inputs.items()}
        call(spec, inputs, mode, inplace=True)
        for k, t in inputs.items():
            assert (t._version > before[k]) == (k in written), f"{mode}: {k} version {before[k]} -> {t._version}"
    # autograd then sees the overwrite: a graph that saved x refuses to use its new values
    inputs = _inputs("add_rmsnorm", device)
    leaf = torch.randn_like(inputs["x"], requires_grad=True)
    x = inputs["x"]
    loss = (leaf * x).sum()  # saves x for leaf's gradient
    with torch.no_grad():
        call(spec, inputs, "pre", inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_inplace_bumps_versions_on_cpu_paths(cpu_path):
    _check_inplace_versions("cpu")


@pytest.mark.gpu
def test_inplace_bumps_versions_gpu():
    _check_inplace_versions("cuda")


def test_inplace_into_inference_tensors(cpu_path):
    spec = SPECS["add_rmsnorm"]
    with torch.inference_mode():
        inputs = _inputs("add_rmsnorm")
    with pytest.raises(NormgenError, match="inference tensor, outside inference mode"):
        call(spec, inputs, "pre", inplace=True)
    with torch.inference_mode():
        out = call(spec, inputs, "pre", inplace=True)
    assert out["y"] is inputs["x"]


# ----------------------------------------------------------------------------
# Launch cache and pointer alignment


def test_fast_launch_needs_aligned_pointers(monkeypatch):
    """A direct launch compiled for 16-byte aligned pointers is never reused for others."""
    module = importlib.import_module("generated.add_rmsnorm_cuda")  # (not an attribute until imported)
    launched = []

    class Kernel:
        def __getitem__(self, grid):
            return lambda *args, **options: launched.append("triton") or None

    kernels = {key: Kernel() for key in module.KERNELS}
    launcher = runtime.Launcher(module.TABLE, kernels, module.ABI, "cuda", {})
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: 0, raising=False)
    # the op's launch key in pre mode: x's dtype, the row strides, n_rows, n_cols, rstd stored?, PRE
    key = (torch.float32, 128, 128, 128, 128, 4, 128, False, True)
    launcher.fast[0][key] = (lambda *args: launched.append("direct"), 1, None, (), ())
    launcher(key, True, 0, ())
    launcher(key, False, 0, ())
    assert launched == ["direct", "triton"]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("mode", ["pre", "post"])
def test_misaligned_after_aligned_gpu(dtype, mode):
    """In a fresh process: an aligned call fills the launch cache, then the same shape at a 2/4-byte offset."""
    script = textwrap.dedent(
        f"""
        import torch, generated
        dtype, n, h = torch.{dtype}, 8, 4096
        w = torch.randn(h, device="cuda", dtype=dtype)
        def run(x, r):
            return generated.add_rmsnorm(x, r, w, norm_pos="{mode}")
        x, r = torch.randn(n, h, device="cuda", dtype=dtype), torch.randn(n, h, device="cuda", dtype=dtype)
        run(x, r); run(x, r)
        bx = torch.randn(n * h + 1, device="cuda", dtype=dtype)
        br = torch.randn(n * h + 1, device="cuda", dtype=dtype)
        mx, mr = bx[1:].view(n, h), br[1:].view(n, h)
        assert mx.data_ptr() % 16 != 0
        got = run(mx, mr)
        torch.cuda.synchronize()
        ref = run(mx.clone(), mr.clone())
        for a, b in zip(got, ref):
            assert torch.equal(a, b), "misaligned call differs from an aligned copy"
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


# ----------------------------------------------------------------------------
# Inputs


@pytest.mark.parametrize("other", ["residual", "weight"])
def test_mixed_cpu_and_meta_inputs_are_refused(other, cpu_path):
    inputs = _inputs("add_rmsnorm")
    inputs[other] = inputs[other].to("meta")
    with pytest.raises(NormgenError, match=f"{other} .* must"):
        call(SPECS["add_rmsnorm"], inputs, "pre")


@pytest.mark.parametrize("eps", [np.float32(1e-5), np.float64(1e-5), np.int64(0)])
def test_numpy_eps(eps, cpu_path):
    inputs = _inputs("rmsnorm")
    expected = generated.rmsnorm(inputs["x"], inputs["weight"], eps=float(eps))
    torch.testing.assert_close(generated.rmsnorm(inputs["x"], inputs["weight"], eps=eps), expected)


def test_nested_sparse_and_mkldnn_tensors_are_refused(cpu_path):
    """Tensors of another layout than torch.strided, and nested ones, are refused by name before any
    launch. A jagged nested x passed the checks (its shape, dtype, contiguity and last stride look like a
    dense x's) and reached the kernels with its data pointer, 0; sparse ones were told to call
    .contiguous(), which does not help (found by an audit)."""
    w = torch.ones(64)
    x = torch.randn(4, 64)
    rows = [torch.randn(3, 64), torch.randn(5, 64)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch: the strided nested layout is a prototype)
        strided_nested = torch.nested.nested_tensor(rows)
    cases = {
        "x is a nested tensor \\(torch.jagged\\).*x.values\\(\\)": lambda: generated.rmsnorm(
            torch.nested.nested_tensor(rows, layout=torch.jagged), w
        ),
        "x is a nested tensor \\(torch.strided\\).*to_padded_tensor": lambda: generated.rmsnorm(strided_nested, w),
        "x is a torch.sparse_coo tensor": lambda: generated.rmsnorm(x.to_sparse(), w),
        "x is a torch.sparse_csr tensor": lambda: generated.layernorm(x.to_sparse_csr(), w, w),
        "x is a torch._mkldnn tensor": lambda: generated.rmsnorm(x.to_mkldnn(), w),
        "residual is a torch.sparse_coo tensor": lambda: generated.add_rmsnorm(x, x.to_sparse(), w),
        "weight is a torch.sparse_coo tensor": lambda: generated.rmsnorm(x, w.to_sparse()),
        "bias is a torch.sparse_coo tensor": lambda: generated.layernorm(x, w, w.to_sparse()),
    }
    for message, refused in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (torch: sparse CSR is in beta)
            with pytest.raises(NormgenError, match=message):
                refused()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_eps_beyond_fp32_is_refused(name, cpu_path):
    """The kernels add eps in fp32: an eps above fp32's largest number became inf there, and every y
    0 (the bias for layer norms), where the formula gives tiny nonzero values. The call's checks
    refuse it; fp32's largest itself is taken, and an rms norm's y is then the formula's."""
    spec = SPECS[name]
    inputs = _inputs(name)
    largest = float(np.finfo(np.float32).max)
    # the bound as the message writes it, a number the call then takes (a rounded 3.4028235e+38 was above it)
    bound = rf"within fp32's range \(at most {re.escape(repr(largest))}, fp32's largest"
    huge = (10**400, "got a number too large for a float (int)")  # (float() overflows)
    for eps, got in ((3.5e38, "got 3.5e+38"), (1e300, "got 1e+300"), huge):
        with pytest.raises(NormgenError, match=rf"{name}: eps must be .* {bound}.*\), {re.escape(got)}$"):
            call(spec, inputs, _mode(spec), eps=eps)
    got = call(spec, inputs, _mode(spec), eps=float(repr(largest)))
    if not (spec.is_quantized or spec.is_layer or spec.has_bias):  # (q: 0 under the scale's floor, 1e-12)
        s = inputs["x"].double() + (inputs["residual"].double() if spec.has_residual else 0)
        w = inputs["weight"].double() + (1 if "gemma" in name else 0)  # (Gemma's 1 + w)
        y = s * torch.rsqrt(s.square().mean(-1, keepdim=True) + largest) * w
        assert y.abs().min() > 0  # the case: tiny, nonzero
        torch.testing.assert_close(got["y"].double(), y, rtol=1e-3, atol=0)


@needs_interpreter
def test_concurrent_calls_interpreter():
    """Triton's interpreter patches shared state while a kernel runs: calls from threads must not mix."""
    spec = SPECS["add_rmsnorm"]
    cases = [_inputs("add_rmsnorm", rows=3 + i, width=128) for i in range(8)]
    expected = [call(spec, dict(inputs), "pre") for inputs in cases]
    results, errors = [None] * len(cases), []
    barrier = threading.Barrier(len(cases))

    def work(i):
        try:
            barrier.wait()
            results[i] = call(spec, dict(cases[i]), "pre")
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(repr(error))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for got, want in zip(results, expected, strict=True):
        for key in want:
            assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("mode", ["pre", "post"])
def test_inplace_under_compile_fullgraph(mode, cpu_path):
    """torch.compile(fullgraph=True) takes an in-place call; the memory checks run when the graph runs
    (on the tensors the backend hands the op)."""
    spec = SPECS["add_rmsnorm"]

    def step(x, residual, weight):
        return generated.add_rmsnorm(x, residual, weight, norm_pos=mode, inplace=True)

    inputs = _inputs("add_rmsnorm")
    expected = call(spec, {k: t.clone() for k, t in inputs.items()}, mode, inplace=True)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        out = compiled(inputs["x"], inputs["residual"], inputs["weight"])
    assert torch.equal(inputs["x"], expected["y"]) and torch.equal(out[0], expected["y"])
    if mode == "pre":
        assert torch.equal(inputs["residual"], expected["residual_out"])
    # x passed as the residual too: refused when traced (on cuda nothing else would: the graph runs the
    # kernels; here, before the check, aot_eager handed the post-mode op a copy of x and returned a result)
    same = torch.randn(3, 128)
    with torch.no_grad(), pytest.raises(Exception, match="separate memory|overlap"):
        compiled(same, same, inputs["weight"])


@pytest.mark.parametrize("name", ["add_rmsnorm", "add_rmsnorm_int8"])
def test_inplace_under_compile_versions_only_what_it_writes(name, cpu_path):
    """Compiled in-place calls record the one mode's custom op (NAME_inplace_MODE), whose schema marks
    only what that mode writes: the inputs it leaves alone keep their version, as eagerly, so a graph
    that saved them still runs its backward (the op that declared both written made torch copy the
    residual back in post mode and bump its version: "modified by an inplace operation")."""
    written = {"pre": ("residual",) if SPECS[name].is_quantized else ("x", "residual"), "post": ("x",)}
    for mode in ("pre", "post"):
        torch._dynamo.reset()
        compiled = torch.compile(
            lambda x, r, w, mode=mode: getattr(generated, name)(x, r, w, norm_pos=mode, inplace=True),
            fullgraph=True,
            backend="aot_eager",
        )
        inputs = {k: t for k, t in _inputs(name).items() if k in ("x", "residual", "weight")}
        eager = {k: t.clone() for k, t in inputs.items()}
        leaf = torch.randn_like(inputs["x"], requires_grad=True)
        kept = [k for k in ("x", "residual") if k not in written[mode]]
        losses = [(leaf * inputs[k]).sum() for k in kept]  # each saves its input
        before = {k: t._version for k, t in inputs.items()}
        with torch.no_grad():
            out = compiled(inputs["x"], inputs["residual"], inputs["weight"])
            want = getattr(generated, name)(eager["x"], eager["residual"], eager["weight"], norm_pos=mode, inplace=True)
        for k, t in inputs.items():
            assert (t._version > before[k]) == (k in written[mode]), f"{mode}: {k} version {before[k]} -> {t._version}"
            assert torch.equal(t, eager[k]), f"{mode}: {k}"
        for got, expected in zip(out, want, strict=True):
            assert torch.equal(got, expected)
        for loss in losses:
            loss.backward()  # (no error: what it saved was not written)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["pre", "post"])
def test_inplace_x_as_residual_refused_under_compile_gpu(mode):
    """On cuda the compiled in-place call is the op's kernels, with no check when the graph runs: x passed
    as the residual too is refused when traced (before, the pre-mode call left s or y in it by backend,
    the post-mode one y)."""
    weight = torch.randn(128, device="cuda")
    for backend in ("aot_eager", "inductor"):
        torch._dynamo.reset()
        step = torch.compile(
            lambda x, r, w: generated.add_rmsnorm(x, r, w, norm_pos=mode, inplace=True), fullgraph=True, backend=backend
        )
        same = torch.randn(3, 128, device="cuda")
        with torch.no_grad(), pytest.raises(Exception, match="separate memory"):
            step(same, same, weight)


# ----------------------------------------------------------------------------
# Module construction: what no call could take is refused when the module is built (found by an
# audit: a module of hidden_size (4, 16), eps=None or float64 parameters was built, and every call
# then failed, with an error about the call)


@pytest.mark.parametrize("module", _MODULES, ids=lambda c: c.__name__)
def test_module_construction_refuses_what_no_call_could_take(module):
    name = module.op.name
    for size in ((4, 16), [2, 3, 64], (), 0, -5, 64.0, True, "64"):
        with pytest.raises(NormgenError, match=rf"{name}: hidden_size"):
            module(size)
    with pytest.raises(TypeError, match=rf"{name}: eps must be a number, got None"):
        module(64, eps=None)
    for eps in (-1.0, float("nan"), float("inf"), 3.5e38, 1e300, 10**400):  # (inf in fp32; float() overflows)
        with pytest.raises(NormgenError, match=rf"{name}: eps must be a finite number >= 0"):
            module(64, eps=eps)
    with pytest.raises(NormgenError, match=rf"{name}: parameters of dtype torch.float64, which no call could take"):
        module(64, dtype=torch.float64)
    # what torch's norm layers take and normgen's ops can: each hidden size form, eps as an int, fp32
    # parameters (with fp16/bf16 input too)
    x = torch.randn(2, 64)
    args = (x, torch.randn_like(x)) if module.op.has_residual else (x,)
    for size in (64, (64,), [64], torch.Size([64]), np.int64(64)):
        layer = module(size, eps=0, dtype=torch.float32).requires_grad_(False)
        assert layer.weight.shape == (64,) and layer.eps == 0.0
        out = layer(*args)
        assert (out[0] if isinstance(out, tuple) else out).shape == x.shape


# The switches: a truthy value that is not a bool (inplace="no") used to count as True, and an
# in-place call wrote into x and the residual (found by an audit); refused now, before any launch.
# (tests/test_fast_path.py: the fast path, which cpu tensors do not take, refuses and takes the same.)


@pytest.mark.parametrize("name", ["add_rmsnorm", "add_layernorm_fp8", "layernorm"])
def test_switches_take_only_true_or_false(name, cpu_path):
    spec = SPECS[name]
    inputs = _inputs(name)
    for _ in range(3):  # the fast path's record made first
        call(spec, inputs, _mode(spec))
    before = {k: v.clone() for k, v in inputs.items()}
    op = getattr(generated, name)
    switches = ["inplace"] * spec.has_residual + ["return_mean"] * spec.stores_mean + ["return_rstd"] * spec.stores_rstd
    for switch in switches:
        for value in ("no", "", None, torch.tensor(True), 2, 0.5, float("nan")):
            with pytest.raises(TypeError, match=rf"{name}: {switch} must be True or False, got"):
                op(**inputs, **{switch: value})
            assert all(torch.equal(inputs[k], before[k]) for k in inputs)  # nothing written
        for value in (1, 1.0, np.True_, np.float64(1), False, 0, 0.0, np.False_):  # the cached forms' True, False
            args = {k: v.clone() for k, v in inputs.items()}
            op(**args, **{switch: value})
