"""Numerics of every generated op: kernels vs an independent float64 formula and
vs the generated PyTorch reference.

On CPU (CI) the kernels run in Triton's interpreter (TRITON_INTERPRET=1): the
cuda kernels under upstream Triton, or the npu kernels under triton-ascend when
NORMGEN_INTERPRET_TARGET=npu. On a GPU machine the `gpu` tests run the same
matrix on CUDA, where the residual sum must be bit-exact in every dtype.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import generated
from dsl import runtime
from dsl.model import ResidualMode

from .cases import DTYPES, LAYOUTS, SPECS, call, make_inputs, matrix, modes
from .oracle import ATOL, RTOL, assert_close, assert_steps_match, oracle, rounder, stepwise

# The first op gets the full matrix (every layout for every case); the others
# cycle through the layouts. The layouts test the op's host side (row views,
# strides), which is the same for both targets: the npu run (triton-ascend's
# interpreter is slow) cycles them for every op.
FULL = set() if runtime.INTERPRET and runtime.INTERPRET_TARGET == "npu" else {"add_rmsnorm"}
CASES = [(name, *case) for name, spec in sorted(SPECS.items()) for case in matrix(spec, name in FULL)]


def case_id(case) -> str:
    name, dtype, mode, width, rows, layout = case
    return f"{name}-{dtype}-{mode or 'plain'}-{width}-{rows}-{layout}"


def reference_fn(spec, package=generated):
    module = importlib.import_module(f"{package.__name__}.{spec.name}_reference")
    return getattr(module, f"{spec.name}_reference")


def reference_outputs(spec, inputs, mode, package=generated):
    args = [inputs["x"]]
    args += [inputs["residual"]] if spec.has_residual else []
    args += [inputs["weight"]] if spec.has_weight else []
    args += [inputs.get("bias")] if spec.has_bias else []
    args.append(spec.eps)
    args += [mode] if spec.has_residual else []
    return reference_fn(spec, package)(*args)


def check_case(name, dtype_token, mode, width, rows, layout, device, on_gpu, spec=None, package=generated, params=None):
    """One case of the matrix: the op's outputs against the float64 formula and the reference.
    ``params``: the weight's and bias's dtype token (None: x's)."""
    spec = spec or SPECS[name]
    dtype = DTYPES[dtype_token]
    inputs = make_inputs(spec, rows, width, dtype, device, layout, params=DTYPES.get(params))
    out = call(spec, inputs, mode, package=package)
    label = f"{name} {dtype_token}{f' ({params} weight)' if params else ''} {mode} {width}x{rows} {layout}"
    lead = inputs["x"].shape[:-1]

    y64, s, mean64, rstd64 = oracle(spec, **{k: v for k, v in inputs.items()}, norm_pos=mode)
    names = ("q" if spec.is_quantized else "y", "residual_out", "scale", "mean", "rstd")
    ref = dict(zip(names, reference_outputs(spec, inputs, mode, package), strict=True))
    # The casting mode's rounding steps, emulated with the rounding this device does
    # (both Triton interpreters truncate fp32 -> bf16; hardware rounds to nearest even).
    rnd = rounder(dtype, interpreter=device == "cpu" and runtime.INTERPRET)
    steps_args = {k: inputs.get(k) for k in ("x", "residual", "weight", "bias")}
    y_steps, s_steps, magnitude = stepwise(spec, spec.casting.value, **steps_args, rnd=rnd)

    # The residual sum: x + r rounded once, as torch's x + r is on hardware, bit for bit.
    if mode == ResidualMode.PRE.value:
        assert torch.equal(out["residual_out"], s_steps), f"{label}: residual sum is not x + r rounded once"
        if on_gpu or dtype is not torch.bfloat16:
            assert torch.equal(out["residual_out"], s), f"{label}: residual sum differs from torch's x + r"
        assert out["residual_out"].is_contiguous()
    elif mode == ResidualMode.POST.value and not spec.is_quantized:
        assert out["residual_out"] is out["y"], f"{label}: post mode's residual out must be y itself"
    elif mode == ResidualMode.POST.value and dtype is not torch.float32:
        assert_steps_match(out["residual_out"], y_steps, f"{label}: unquantized y vs its rounding steps", magnitude)

    if spec.is_quantized:
        check_quantized(spec, out, ref, y64, dtype, mode, label, on_gpu)
    else:
        y = out["y"]
        assert y.shape == inputs["x"].shape and y.dtype == dtype and y.device == inputs["x"].device
        assert_close(y, y64, rtol=RTOL[dtype], atol=ATOL[dtype], what=f"{label}: y vs float64 formula")
        assert_close(y, ref["y"], rtol=RTOL[dtype], atol=ATOL[dtype], what=f"{label}: y vs generated reference")
        if dtype is not torch.float32:
            assert_steps_match(y, y_steps, f"{label}: y vs the {spec.casting.value} rounding steps", magnitude)

    stats_tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}[dtype]
    if "rstd" in out:
        assert out["rstd"].shape == lead
        assert_close(out["rstd"], rstd64, rtol=stats_tol, atol=0, what=f"{label}: rstd")
    if "mean" in out:
        assert out["mean"].shape == lead
        assert_close(out["mean"], mean64, rtol=stats_tol, atol=stats_tol, what=f"{label}: mean")


def quant_codes(q: torch.Tensor) -> torch.Tensor:
    """Integer positions on the quantized grid (fp8 codes are sign-magnitude)."""
    if q.dtype is torch.int8:
        return q.int()
    bits = q.view(torch.uint8).int()
    return torch.where(bits >= 128, 128 - bits, bits)


def quantize_like_reference(spec, y: torch.Tensor):
    qmax = 127.0 if spec.quantize.value == "int8" else 448.0
    y32 = y.float()
    # IEEE fp32 divisions (torch on CUDA divides by a scalar through its reciprocal)
    scale = (y32.abs().amax(-1, keepdim=True).double() / qmax).float().clamp(min=1e-12)
    v = (y32.double() / scale.double()).float().clamp(-qmax - (1.0 if qmax == 127.0 else 0.0), qmax)
    return (v.round().to(torch.int8) if qmax == 127.0 else v.to(torch.float8_e4m3fn)), scale


def check_quantized(spec, out, ref, y64, dtype, mode, label, on_gpu):
    q, scale = out["q"], out["scale"]
    qdtype = torch.int8 if spec.quantize.value == "int8" else torch.float8_e4m3fn
    assert q.dtype == qdtype and q.shape == y64.shape
    assert scale.dtype == torch.float32 and scale.shape == y64.shape[:-1] + (1,)
    if q.numel() == 0:
        return
    # Post mode returns the unquantized y: q and scale must follow from it exactly, code for code
    # (y / scale correctly rounded in fp32, as the float64 quotient rounded to fp32 is; then half to
    # even, clamped): a quantizer that truncated, or rounded half away from zero, fails here.
    if mode == "post":
        own_q, own_scale = quantize_like_reference(spec, out["residual_out"])
        assert torch.equal(scale, own_scale), f"{label}: scale must be max|y| / qmax of the returned y"
        steps = (quant_codes(q) - quant_codes(own_q)).abs().max().item()
        assert steps == 0, f"{label}: q is {steps} steps from quantizing the returned y"
    # Against the generated reference: scales within fp32 rounding; q within one step.
    # In the interpreter, bf16 outputs can differ from the reference by an ulp or two
    # before quantization (its fp32 -> bf16 rounding), which moves q by up to two steps.
    loose = dtype is torch.bfloat16 and not on_gpu
    scale_tol = 1e-6 if dtype is torch.float32 else (RTOL[dtype] if loose else 8e-3)
    assert_close(scale, ref["scale"], rtol=scale_tol, atol=0, what=f"{label}: scale vs reference")
    if qdtype is torch.int8:
        steps = (q.int() - ref["q"].int()).abs().max().item()
        assert steps <= (2 if loose else 1), f"{label}: q differs from the reference by {steps} steps"
    else:
        # fp8's grid is dense near zero, where y itself carries the rounding error of its
        # dtype (e.g. x_hat * w + b cancelling): compare values, one fp8 step apart at most.
        deq, deq_ref = q.double() * scale.double(), ref["q"].double() * ref["scale"].double()
        bound = deq_ref.abs() * 2.0**-3 + scale.double() * 2.0**-9 + ATOL[dtype] + RTOL[dtype] * deq_ref.abs()
        worst = ((deq - deq_ref).abs() - bound).max().item()
        assert worst <= 0, f"{label}: dequantized q more than one fp8 step from the reference's (by {worst:.3g})"
    # Against the float64 formula: the quantization step plus the rounding of y in its dtype.
    y_error = ATOL[dtype] + RTOL[dtype] * y64.abs()
    step = scale.double() if qdtype is torch.int8 else y64.abs() * 2.0**-3 + scale.double() * 2.0**-9
    err = (q.double() * scale.double() - y64).abs()
    worst = (err - step - y_error).max().item()
    assert worst <= 0, f"{label}: dequantized q further than one step from the formula (by {worst:.3g})"


@pytest.mark.skipif(
    not runtime.INTERPRET,
    reason="TRITON_INTERPRET is not 1 (with a GPU, conftest leaves it off and test_gpu runs these cases)",
)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_interpreter(case):
    check_case(*case, device="cpu", on_gpu=False)


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gpu(case):
    check_case(*case, device="cuda", on_gpu=True)


# Where the cuda table takes another kernel for the same width from some row count, on the GPU only:
# every op, bf16. Layernorm at 8193-16384 columns from 1024 rows (the multi-pass kernel, tuned); the rms
# norms at exactly 8192 columns from 4096 rows (the multi-pass kernel, dsl/targets/cuda.py EXACT_MULTI).
MANY_ROWS = [
    (name, "bf16", modes(spec)[-1], cols, rows, "2d")
    for name, spec in sorted(SPECS.items())
    for cols, rows in ((12288, 1024), (8192, 4096))
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", MANY_ROWS, ids=case_id)
def test_gpu_many_rows(case):
    check_case(*case, device="cuda", on_gpu=True)


# fp32 weights (and biases) with fp16 and bf16 x, as mixed-precision training keeps them: every op
# with a weight, each mode, a single-pass and a multi-pass width on each target, the layouts cycling.
# The weights hold fp32 values no 16-bit dtype has: y must follow the casting mode's rounding steps
# with the weight unrounded (README, "How dtypes are chosen").
FP32_WEIGHT = [
    (name, dtype, mode, width, rows, LAYOUTS[i % len(LAYOUTS)])
    for i, (name, dtype, mode, width, rows) in enumerate(
        (name, dtype.value, mode, width, rows)
        for name, spec in sorted(SPECS.items())
        if spec.has_weight
        for dtype in spec.dtypes
        if dtype.value != "fp32"
        for mode in modes(spec)
        for width, rows in ((111, 3), (4097, 3), (2048, 57))
    )
]


@pytest.mark.skipif(not runtime.INTERPRET, reason="TRITON_INTERPRET is not 1 (test_gpu_fp32_weight runs these cases)")
@pytest.mark.parametrize("case", FP32_WEIGHT, ids=case_id)
def test_interpreter_fp32_weight(case):
    check_case(*case, device="cpu", on_gpu=False, params="fp32")


def test_reference_fp32_weight(reference_path):
    """The generated reference (what a CPU user gets) follows the same definition."""
    for case in FP32_WEIGHT[::3]:
        check_case(*case, device="cpu", on_gpu=False, params="fp32")


@pytest.mark.gpu
@pytest.mark.parametrize("case", FP32_WEIGHT, ids=case_id)
def test_gpu_fp32_weight(case):
    check_case(*case, device="cuda", on_gpu=True, params="fp32")


def check_weight_dtype_switch(name, device, rows):
    """One shape called with a bf16 weight until the fast path launches the compiled kernel directly (on a
    GPU), then with an fp32 weight, then bf16 again: each weight dtype has its own launch key and kernel,
    so y follows the weight given, never a kernel compiled for the other's rows."""
    spec = SPECS[name]
    mode = modes(spec)[0]
    rnd = rounder(torch.bfloat16, interpreter=device == "cpu")
    for params in (torch.bfloat16, torch.float32, torch.bfloat16):
        inputs = make_inputs(spec, rows, 4096, torch.bfloat16, device, "2d", params=params)
        for _ in range(3):  # the first call compiles; on a GPU, later ones take the direct launch
            out = call(spec, inputs, mode, stats=False)
        steps = stepwise(
            spec, spec.casting.value, **{k: inputs.get(k) for k in ("x", "residual", "weight", "bias")}, rnd=rnd
        )
        assert_steps_match(out["y"], steps[0], f"{name} {params} weight: y vs its rounding steps", steps[2])


@pytest.mark.skipif(not runtime.INTERPRET, reason="TRITON_INTERPRET is not 1 (test_gpu_weight_dtype_switch runs it)")
@pytest.mark.parametrize("name", ["add_rmsnorm", "layernorm"])
def test_interpreter_weight_dtype_switch(name):
    check_weight_dtype_switch(name, "cpu", 3)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["add_rmsnorm", "layernorm"])
def test_gpu_weight_dtype_switch(name):
    check_weight_dtype_switch(name, "cuda", 64)
