"""The interpreter's bf16 <-> fp32 casts by shift (tests/interpreter_bf16_casts.py) give the interpreter's own bits.

Runs in either interpreter (upstream Triton's in the main run, triton-ascend's in the npu
run). The wrapped ``_convert_float`` and the original are compared bit for bit: every one
of the 65,536 bf16 patterns to fp32; to bf16, every fp32 sign, exponent and upper significand
(the upper 16 bits) with eight lower halves each, every single-bit and some random subnormals;
arrays with and without subnormals, 0-d ones, other shapes. A cast with a rounding mode and the
other pairs of types must reach the original untouched, and a bf16 kernel in this session must
cast through the shift.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsl import runtime

from . import interpreter_bf16_casts

pytestmark = pytest.mark.skipif(not runtime.INTERPRET, reason="needs TRITON_INTERPRET=1 (the CPU interpreter)")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

wrapped = interpreter._convert_float
original = getattr(wrapped, "original", None)


def fp32_patterns() -> np.ndarray:
    upper = np.arange(1 << 16, dtype=np.uint32) << 16
    lower = np.array([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x1234, 0xABCD], dtype=np.uint32)
    bits = (upper[:, None] | lower[None, :]).ravel()
    single = np.uint32(1) << np.arange(23, dtype=np.uint32)  # subnormals with one bit set, both signs
    rng = np.random.default_rng(0)
    random_subnormals = rng.integers(1, 1 << 23, size=4096, dtype=np.uint32)
    extra = np.concatenate([single, random_subnormals])
    return np.concatenate([bits, extra, extra | np.uint32(0x80000000)])


def same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    diff = np.flatnonzero(got.ravel() != want.ravel())[:5]
    assert not diff.size, f"values differ, first at {diff}: {got.ravel()[diff]} vs {want.ravel()[diff]}"


def test_the_wrapper_is_installed_in_test_sessions():
    assert getattr(wrapped, "normgen_shift", False) and original is not None, "tests/conftest.py installs it"
    assert not interpreter_bf16_casts.install(), "installing twice wraps twice"


def test_every_bf16_pattern_to_fp32():
    bits = np.arange(1 << 16, dtype=np.uint16)  # bf16 is held as uint16
    same(wrapped(bits, tl.bfloat16, tl.float32, None), original(bits, tl.bfloat16, tl.float32, None))


def test_fp32_patterns_to_bf16():
    x = fp32_patterns().view(np.float32)
    same(wrapped(x, tl.float32, tl.bfloat16, None), original(x, tl.float32, tl.bfloat16, None))


@pytest.mark.parametrize("subnormals", [False, True])
@pytest.mark.parametrize("shape", [(), (1,), (3, 5), (2, 3, 4)])
def test_shapes_with_and_without_subnormals(shape, subnormals):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    if x.size > 1:
        x.ravel()[0] = 0.0  # the zero of a masked load
        if subnormals:
            x.ravel()[1] = np.float32(3e-39)
    elif subnormals:
        x = np.asarray(np.float32(-3e-39)).reshape(shape)
    same(wrapped(x, tl.float32, tl.bfloat16, None), original(x, tl.float32, tl.bfloat16, None))
    b = original(x, tl.float32, tl.bfloat16, None)
    same(wrapped(b, tl.bfloat16, tl.float32, None), original(b, tl.bfloat16, tl.float32, None))


def test_rounding_modes_and_other_types_reach_the_original():
    x = fp32_patterns().view(np.float32)
    calls = dict(interpreter_bf16_casts.CALLS)
    rtne = interpreter._ir.ROUNDING_MODE.RTNE
    same(wrapped(x, tl.float32, tl.bfloat16, rtne), original(x, tl.float32, tl.bfloat16, rtne))
    same(wrapped(x, tl.float32, tl.float16, None), original(x, tl.float32, tl.float16, None))
    assert interpreter_bf16_casts.CALLS["original"] - calls["original"] == 2


@triton.jit
def cast_kernel(X_ptr, Y_ptr, N: tl.constexpr):
    cols = tl.arange(0, N)
    x = tl.load(X_ptr + cols, mask=cols < N - 3, other=0.0)
    tl.store(Y_ptr + cols, (x.to(tl.float32) * 3.0).to(tl.bfloat16))


def test_a_bf16_kernel_casts_through_the_shift():
    x = torch.randn(16, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    y = torch.empty_like(x)
    shifted = interpreter_bf16_casts.CALLS["shifted"]
    cast_kernel[(1,)](x, y, N=16)
    assert interpreter_bf16_casts.CALLS["shifted"] > shifted
    want = (x.float() * 3.0).view(torch.int32) >> 16  # the interpreter truncates (no rounding mode)
    want[-3:] = 0
    assert torch.equal(y.view(torch.int16).to(torch.int32) & 0xFFFF, want & 0xFFFF)
