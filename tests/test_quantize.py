"""The quantized kernels' two forms of the same arithmetic (dsl/device.py, kernel_macros.jinja).

cuda's kernels quantize with fast forms (fast_quantize): one NaN-keeping max reduction for
the row's amax, y / scale from one reciprocal per row with an fma correction
(``div_by_row``; int8 takes ``quotient_by_row``, whose -0 and infinite-scale quotients its
codes do not see), and the GPU's own conversions: e4m3 (``fp8_e4m3_code`` with NATIVE), int8 rounded,
saturated and NaN to 0 in one instruction (``int8_code`` with NATIVE; its portable form,
which the interpreter runs, rounds by an addition). npu's keep the portable forms (a max and
a NaN sum, ``tl.math.div_rn``, ``round_half_even``, ``fp8_e4m3_bits``). Here both forms run
on the same values and must give the same bits: on the GPU for every finite bf16 and fp16 y
on many scales (what the kernels can meet: |y| <= qmax * scale), and fp32 samples; in the
interpreter on samples with the ties and NaN rows the rules are about, the -0 quotients of the edge
rows included (the forms take no zero's sign from a negation, which Triton up to 3.6 compiles as 0 - x
and later versions, the interpreter's among them, as a true negation: the same code in both).
"""

import pytest
import torch
import triton
import triton.language as tl

from dsl import runtime
from dsl.device import (
    div_by_row,
    fp8_e4m3_bits,
    fp8_e4m3_code,
    int8_code,
    max_keep_nan,
    quotient_by_row,
    round_half_even,
    row_amax,
    row_amax_nan,
    row_nan,
)

QMAX = {"int8": 127.0, "fp8": 448.0}
QMIN = {"int8": -128.0, "fp8": -448.0}
NATIVE = {"int8": runtime.cuda_native_int8, "fp8": runtime.cuda_native_fp8}  # the device's conversions (GPU tests)


@triton.jit
def _both_forms(
    Y_ptr,
    SCALE_ptr,
    OUT_ptr,
    n_cols,
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    FP8: tl.constexpr,
    NATIVE: tl.constexpr,
    SELECT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Row r of Y divided by SCALE[r] both ways; OUT[0] the fast form's v and code, OUT[1] the portable one's."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    col_mask = cols < n_cols
    rows = row + tl.arange(0, 1)
    y = tl.load(Y_ptr + rows[:, None] * n_cols + cols[None, :], mask=col_mask[None, :], other=0.0).to(tl.float32)
    scale = tl.load(SCALE_ptr + rows)
    fast = div_by_row(y, scale, SELECT)
    slow = tl.math.div_rn(y, scale[:, None])
    slow_c = tl.minimum(tl.maximum(slow, QMIN), QMAX)
    if FP8:  # the kernels' fp8 form: the quotient unclamped into fp8_e4m3_code
        code_fast = fp8_e4m3_code(fast, NATIVE).to(tl.float32)
        code_slow = tl.where(slow != slow, 0x7F, fp8_e4m3_bits(slow_c).to(tl.int32)).to(tl.float32)  # NaN: 0x7F
    else:  # the kernels' int8 form: quotient_by_row's quotient, unclamped, into int8_code
        code_fast = int8_code(quotient_by_row(y, scale), NATIVE).to(tl.float32)
        code_slow = tl.where(slow != slow, 0.0, round_half_even(slow_c))  # int8 has no NaN: 0
    n = tl.num_programs(0) * n_cols
    base = OUT_ptr + rows[:, None] * n_cols + cols[None, :]
    tl.store(base, fast, mask=col_mask[None, :])
    tl.store(base + n, code_fast, mask=col_mask[None, :])
    tl.store(base + 2 * n, slow, mask=col_mask[None, :])
    tl.store(base + 3 * n, code_slow, mask=col_mask[None, :])


@triton.jit
def _amax_forms(Y_ptr, OUT_ptr, n_cols, EVEN_N: tl.constexpr, BLOCK: tl.constexpr):
    """Per row: the fast amax (one reduction, through a running max) and the portable amax + NaN sum."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    col_mask = cols < n_cols
    rows = row + tl.arange(0, 1)
    y = tl.load(Y_ptr + rows[:, None] * n_cols + cols[None, :], mask=col_mask[None, :], other=0.0)
    fast = max_keep_nan(tl.zeros([1], dtype=tl.float32), row_amax_nan(y, col_mask, EVEN_N))
    slow = row_amax(y, col_mask, EVEN_N) + row_nan(y, col_mask, EVEN_N)
    tl.store(OUT_ptr + rows, fast)
    tl.store(OUT_ptr + tl.num_programs(0) + rows, slow)


# (quant, div_by_row's SELECT): fp8's kernels take both forms (by the rows' dtype); int8's take
# quotient_by_row (its case still runs div_by_row's sign form for the quotient it compares)
FORMS = pytest.mark.parametrize(
    ("quant", "select"), [("int8", False), ("fp8", False), ("fp8", True)], ids=["int8", "fp8", "fp8-select"]
)


def _run_both(y: torch.Tensor, scale: torch.Tensor, quant: str, native: bool, select: bool):
    rows, n_cols = y.shape
    out = torch.empty(4, rows, n_cols, dtype=torch.float32, device=y.device)
    block = triton.next_power_of_2(n_cols)
    _both_forms[(rows,)](y, scale, out, n_cols, QMIN[quant], QMAX[quant], quant == "fp8", native, select, block)
    return out


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.view(torch.int32) == b.view(torch.int32)) | (torch.isnan(a) & torch.isnan(b))


def _where_not(same: torch.Tensor, *tensors) -> str:
    """How many differ, and the first few (row, column, values)."""
    bad = (~same).nonzero()[:4].tolist()
    return f"{int((~same).sum())} differ, e.g. " + "; ".join(
        f"{tuple(i)}: " + ", ".join(f"{float(t[tuple(i)]):.9g}" for t in tensors) for i in bad
    )


def _tiny(v: torch.Tensor) -> torch.Tensor:
    """Quotients 0 < |v| < 2^-60, where div_by_row may be an ulp off div_rn (its remainder or result falls
    below fp32's range); far below what quantizes to a nonzero code, and the codes are compared everywhere."""
    return (v != 0) & (v.abs() < 2.0**-60)


def _same_codes(a: torch.Tensor, b: torch.Tensor, quant: str) -> torch.Tensor:
    """The stored codes agree: fp8's bit patterns; int8's integers (which have no -0)."""
    return _same_bits(a, b) if quant == "fp8" else (a == b) | (torch.isnan(a) & torch.isnan(b))


def _ties_and_edges(device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of y with scales where y / scale lands on ties (k + 0.5), e4m3 rounding boundaries
    and subnormals, clamps, zero, a row of infinite scale, quotients past qmax (a scale no
    kernel computes, but the codes must saturate), and a row of NaN scale."""
    k = torch.arange(-128, 128, dtype=torch.float32)
    int8_ties = torch.cat([k + 0.5, k, k + 0.25])  # with scale 1 and 2^-3
    fp8_grid = torch.tensor([2.0**e * (1 + m / 8) for e in range(-6, 9) for m in range(8)])
    fp8_mid = torch.cat([fp8_grid * (1 + 1 / 16), fp8_grid, -fp8_grid * (1 + 1 / 16)])  # halfway to the next code
    sub = torch.arange(0, 64, dtype=torch.float32) * 2.0**-10  # e4m3 subnormals and their midpoints
    y = torch.zeros(8, 1024)
    y[0, : int8_ties.numel()] = int8_ties
    y[1, : int8_ties.numel()] = int8_ties * 0.125
    y[2, : fp8_mid.numel()] = fp8_mid.clamp(-448, 448)
    y[3, : sub.numel()] = sub
    y[4, :8] = torch.tensor([1.0, -1.0, 0.0, -0.0, 3.0e38, -3.0e38, 5.0, -5.0])
    y[5, :5] = torch.tensor([1.0, -2.0, float("inf"), 0.0, -0.0])
    y[6, :8] = torch.tensor([449.0, 464.0, 480.0, -500.0, 1e30, -1e30, 127.5, -128.5])
    y[7, :5] = torch.tensor([1.0, -1.0, 0.0, -0.0, 448.0])
    # the seventh: past qmax, saturated; the eighth: a row of NaN scale (a row holding a NaN)
    scale = torch.tensor([1.0, 0.125, 1.0, 1.0, 3.0e38 / 448.0, float("inf"), 1.0, float("nan")])
    return y.to(device), scale.to(device)


@FORMS
def test_fast_and_portable_forms_agree_in_the_interpreter(quant, select):
    if not runtime.INTERPRET:
        pytest.skip("the interpreter run (the GPU test below covers the device)")
    y, scale = _ties_and_edges("cpu")
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(26, 1024, generator=g) * torch.logspace(-30, 30, 26).unsqueeze(1)
    y = torch.cat([y, rand])
    scale = torch.cat([scale, rand.abs().amax(1) / QMAX[quant]]).clamp(min=1e-12)
    out = _run_both(y, scale, quant, native=False, select=select)
    scales = scale[:, None].expand_as(y)  # each element's row scale, for the message
    same = _same_bits(out[0], out[2])
    assert same.all(), "div_by_row differs from div_rn: " + _where_not(same, y, scales, out[0], out[2])
    same = _same_codes(out[1], out[3], quant)
    assert same.all(), "the codes differ: " + _where_not(same, y, scales, out[1], out[3])
    # the ties went to even, as torch.round does
    if quant == "int8":
        assert torch.equal(out[1][0, :256], torch.round(y[0, :256]).clamp(-128.0, 127.0))


def test_amax_forms_agree_in_the_interpreter():
    if not runtime.INTERPRET:
        pytest.skip("the interpreter run (the GPU test below covers the device)")
    y = torch.randn(4, 100)
    y[1, 7] = float("nan")
    y[2, 99] = float("nan")
    y[3] = -y[3].abs()
    out = torch.empty(2, 4)
    _amax_forms[(4,)](y, out, 100, False, 128)
    assert _same_bits(out[0], out[1]).all()
    assert torch.isnan(out[0, 1]) and torch.isnan(out[0, 2])
    assert torch.equal(out[0, [0, 3]], y[[0, 3]].abs().amax(1))


def _every_finite(dtype) -> torch.Tensor:
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32, device="cuda").to(torch.int16)
    values = bits.view(dtype).float()
    return values[torch.isfinite(values)]


@pytest.mark.gpu
@FORMS
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fast_forms_give_the_portable_bits_for_every_16_bit_y(quant, select, dtype):
    """Every finite y of the dtype against scales from every 97th |y| as amax (and the 1e-12 floor):
    y / scale and the code, both forms, bit for bit wherever |y| <= amax (what a row can hold)."""
    native = NATIVE[quant](torch.cuda.current_device())
    values = _every_finite(dtype)
    amaxes = values.abs().unique()[::97]
    for chunk in amaxes.split(64):
        scale = (chunk / QMAX[quant]).clamp(min=1e-12)
        y = values.expand(chunk.numel(), -1).contiguous()
        out = _run_both(y, scale, quant, native, select)
        inside = y.abs() <= chunk[:, None]
        same = _same_bits(out[0], out[2]) | ~inside | _tiny(out[2])
        assert same.all(), "div_by_row differs from div_rn: " + _where_not(same, y, out[0], out[2])
        same = _same_codes(out[1], out[3], quant) | ~inside
        assert same.all(), "the codes differ: " + _where_not(same, y, out[1], out[3])


@pytest.mark.gpu
@FORMS
def test_fast_forms_give_the_portable_bits_for_fp32_rows(quant, select):
    native = NATIVE[quant](torch.cuda.current_device())
    g = torch.Generator(device="cuda").manual_seed(1)
    for exponent in range(-35, 36, 5):
        y = torch.randn(256, 4096, device="cuda", generator=g) * 10.0**exponent
        scale = (y.abs().amax(1) / QMAX[quant]).clamp(min=1e-12)
        out = _run_both(y, scale, quant, native, select)
        same = _same_bits(out[0], out[2]) | _tiny(out[2])
        assert same.all(), f"div_by_row differs from div_rn at 1e{exponent}: " + _where_not(same, y, out[0], out[2])
        same = _same_codes(out[1], out[3], quant)
        assert same.all(), f"the codes differ at 1e{exponent}: " + _where_not(same, y, out[1], out[3])
    y, scale = _ties_and_edges("cuda")
    out = _run_both(y, scale, quant, native, select)
    same = _same_bits(out[0], out[2])
    assert same.all(), "div_by_row differs at the edges: " + _where_not(same, y, out[0], out[2])
    same = _same_codes(out[1], out[3], quant)
    assert same.all(), "the codes differ at the edges: " + _where_not(same, y, out[1], out[3])


@triton.jit
def _e4m3_forms(V_ptr, OUT_ptr, n, NATIVE: tl.constexpr, BLOCK: tl.constexpr):
    """fp8_e4m3_code of fp32 values as given (NATIVE or not) beside the portable steps spelled out."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    v = tl.load(V_ptr + offs, mask=mask, other=0.0)
    code = fp8_e4m3_code(v, NATIVE)
    portable = tl.where(v != v, 0x7F, fp8_e4m3_bits(tl.minimum(tl.maximum(v, -448.0), 448.0)).to(tl.int32))
    tl.store(OUT_ptr + offs, code, mask=mask)
    tl.store(OUT_ptr + n + offs, portable.to(tl.uint8), mask=mask)


@pytest.mark.gpu
def test_native_e4m3_code_for_every_fp32_bit_pattern():
    """The kernels pass y / scale to fp8_e4m3_code unclamped: the device's conversion alone must give
    the portable code (NaN of either sign to 0x7F, infinities and |v| > 448 to +-448, nearest even)
    for all 2^32 fp32 bit patterns."""
    native = NATIVE["fp8"](torch.cuda.current_device())
    if not native:
        pytest.skip("this GPU has no e4m3 conversion (compute capability below 8.9)")
    n = 2**28
    out = torch.empty(2 * n, dtype=torch.uint8, device="cuda")
    for start in range(-(2**31), 2**31, n):
        v = torch.arange(start, start + n, dtype=torch.int32, device="cuda").view(torch.float32)
        _e4m3_forms[(n // 1024,)](v, out, n, True, 1024)
        same = out[:n] == out[n:]
        assert same.all(), f"the codes differ from bit pattern {start}: " + _where_not(
            same, v, out[:n].float(), out[n:].float()
        )


@pytest.mark.gpu
def test_amax_forms_agree_on_the_gpu():
    y = torch.randn(64, 1000, device="cuda")
    y[5, 17] = float("nan")
    y[9, 999] = float("nan")
    out = torch.empty(2, 64, device="cuda")
    _amax_forms[(64,)](y, out, 1000, False, 1024)
    assert _same_bits(out[0], out[1]).all()
    assert torch.isnan(out[0, 5]) and torch.isnan(out[0, 9]) and not torch.isnan(out[0, 6])


def test_native_int8_only_where_ptx_runs(monkeypatch):
    """The native int8 code is PTX: on an NVIDIA GPU only, never in the interpreter or on ROCm."""
    decide = runtime.cuda_native_int8.__wrapped__
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime, "INTERPRET", False)
    monkeypatch.setattr(torch.version, "hip", None)
    assert decide(0) is True
    monkeypatch.setattr(torch.version, "hip", "6.2.0")
    assert decide(0) is False
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(runtime, "INTERPRET", True)
    assert decide(0) is False
    monkeypatch.setattr(runtime, "INTERPRET", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert decide(0) is False


def test_native_fp8_only_on_nvidia_from_8_9(monkeypatch):
    """e4m3 by the device's conversion on an NVIDIA GPU of capability 8.9 and up only: not in the
    interpreter, nor on ROCm (whose capability is its gfx version: 9.4 for an MI300)."""
    decide = runtime.cuda_native_fp8.__wrapped__
    capability = [(9, 0)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: capability[0])
    monkeypatch.setattr(runtime, "INTERPRET", False)
    monkeypatch.setattr(torch.version, "hip", None)
    assert decide(0) is True
    capability[0] = (8, 6)
    assert decide(0) is False
    capability[0] = (9, 4)
    monkeypatch.setattr(torch.version, "hip", "6.2.0")
    assert decide(0) is False
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(runtime, "INTERPRET", True)
    assert decide(0) is False
