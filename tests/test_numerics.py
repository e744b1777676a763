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

from dsl import runtime
from dsl.model import ResidualMode

from .cases import DTYPES, SPECS, call, make_inputs, matrix
from .oracle import ATOL, RTOL, assert_close, assert_within_ulps, oracle, quantize_oracle

# The first op gets the full matrix (every layout for every case); the others
# cycle through the layouts.
FULL = {"add_rmsnorm"}
CASES = [(name, *case) for name, spec in sorted(SPECS.items()) for case in matrix(spec, name in FULL)]


def case_id(case) -> str:
    name, dtype, mode, width, rows, layout = case
    return f"{name}-{dtype}-{mode or 'plain'}-{width}-{rows}-{layout}"


def reference_fn(spec):
    module = importlib.import_module(f"generated.{spec.name}_reference")
    return getattr(module, f"{spec.name}_reference")


def reference_outputs(spec, inputs, mode):
    args = [inputs["x"]]
    args += [inputs["residual"]] if spec.has_residual else []
    args += [inputs["weight"]] if spec.has_weight else []
    args += [inputs.get("bias")] if spec.has_bias else []
    args.append(spec.eps)
    args += [mode] if spec.has_residual else []
    return reference_fn(spec)(*args)


def check_case(name, dtype_token, mode, width, rows, layout, device, on_gpu):
    spec = SPECS[name]
    dtype = DTYPES[dtype_token]
    inputs = make_inputs(spec, rows, width, dtype, device, layout)
    out = call(spec, inputs, mode)
    label = f"{name} {dtype_token} {mode} {width}x{rows} {layout}"
    lead = inputs["x"].shape[:-1]

    y64, s, mean64, rstd64 = oracle(spec, **{k: v for k, v in inputs.items()}, norm_pos=mode)
    ref = dict(zip(out.keys(), reference_outputs(spec, inputs, mode)))
    # The interpreter's fp32 -> bf16 rounding can differ from hardware by one ulp.
    sum_ulps = 0 if on_gpu or dtype is not torch.bfloat16 else 1

    # The residual sum: torch's x + r, bit for bit.
    if mode == ResidualMode.PRE.value:
        assert_within_ulps(out["residual_out"], s, sum_ulps, f"{label}: residual sum")
        assert out["residual_out"].is_contiguous()
    elif mode == ResidualMode.POST.value and not spec.is_quantized:
        assert out["residual_out"] is out["y"], f"{label}: post mode's residual out must be y itself"

    if spec.is_quantized:
        check_quantized(spec, out, ref, y64, label, on_gpu)
    else:
        y = out["y"]
        assert y.shape == inputs["x"].shape and y.dtype == dtype and y.device == inputs["x"].device
        assert_close(y, y64, rtol=RTOL[dtype], atol=ATOL[dtype], what=f"{label}: y vs float64 formula")
        assert_close(y, ref["y"], rtol=RTOL[dtype], atol=ATOL[dtype], what=f"{label}: y vs generated reference")

    stats_tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}[dtype]
    if "rstd" in out:
        assert out["rstd"].shape == lead
        assert_close(out["rstd"], rstd64, rtol=stats_tol, atol=0, what=f"{label}: rstd")
    if "mean" in out:
        assert out["mean"].shape == lead
        assert_close(out["mean"], mean64, rtol=stats_tol, atol=stats_tol, what=f"{label}: mean")


def check_quantized(spec, out, ref, y64, label, on_gpu):
    q, scale = out["q"], out["scale"]
    qdtype = torch.int8 if spec.quantize.value == "int8" else torch.float8_e4m3fn
    assert q.dtype == qdtype and q.shape == y64.shape
    assert scale.dtype == torch.float32 and scale.shape == y64.shape[:-1] + (1,)
    if q.numel() == 0:
        return
    # Against the generated reference: scales within fp32 rounding, q within one step.
    # (bf16/fp16 outputs may differ by an ulp before quantization, which moves the scale.)
    x_dtype = ref["residual_out"].dtype if "residual_out" in ref else None
    scale_tol = 2e-7 if x_dtype in (None, torch.float32) else 1.6e-2
    assert_close(scale, ref["scale"], rtol=scale_tol, atol=0, what=f"{label}: scale vs reference")
    # Where the kernel's own unquantized y is available (post mode), q must follow from it.
    if "residual_out" in out and not out["residual_out"] is out["q"] and label.split()[2] == "post":
        y = out["residual_out"].float()
        expected_scale = (y.abs().amax(-1, keepdim=True) / (127.0 if qdtype is torch.int8 else 448.0)).clamp(min=1e-12)
        assert torch.equal(scale, expected_scale), f"{label}: scale must be max|y| / qmax of the returned y"
    dequant = q.double() * scale.double()
    qv, qscale = quantize_oracle(spec, y64)
    step = scale.double() if qdtype is torch.int8 else scale.double() * 32.0  # fp8 steps grow with magnitude
    err = (dequant - y64).abs()
    assert (err <= step + 1e-6).all(), f"{label}: dequantized q further than one step from the formula"


@pytest.mark.skipif(not runtime.INTERPRET, reason="needs TRITON_INTERPRET=1 (the CPU interpreter)")
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_interpreter(case):
    check_case(*case, device="cpu", on_gpu=False)


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gpu(case):
    check_case(*case, device="cuda", on_gpu=True)
