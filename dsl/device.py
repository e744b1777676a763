"""Device code shared by every generated kernel (hand-written ``@triton.jit`` helpers).

Both targets' kernels call these (they are ordinary Triton, which upstream
Triton and triton-ascend both compile, and both interpreters run). Triton
inlines a helper into its caller before optimizing, and resolves each
``tl.constexpr`` branch at compile time, so a kernel specialized with
EVEN_N=True contains only the unmasked code. Generated modules import the helpers
by name (``from dsl.device import tile_mask``): Inductor, which copies a kernel's
source into its own code under torch.compile, brings along the ``@triton.jit``
functions a kernel calls by name, not a module's attributes. (Loads and stores
stay in the kernels' text: see templates/kernel_macros.jinja.)
"""

import triton
import triton.language as tl

from .interpreter import interpreting

# ----------------------------------------------------------------------------
# Tiles and masks


@triton.jit
def vec_multiples(values, VEC: tl.constexpr):
    """Each of ``values`` (a cuda kernel's n_cols and row strides, which the launcher checks are
    multiples of VEC) as (v // VEC) * VEC: saying so gives VEC-wide loads and stores."""
    return [(v // VEC) * VEC for v in values]


@triton.jit
def tile_range(pid, n_rows, BLOCK_M: tl.constexpr, PERSISTENT: tl.constexpr):
    """first, stop, step of a forward program's loop over row tiles. PERSISTENT: from its own
    tile with a stride of the grid size; else one program per tile, one step (a constant trip
    count of 1, and Triton removes the loop; the caller's tile is then its program id)."""
    if PERSISTENT:
        first, stop, step = pid, tl.cdiv(n_rows, BLOCK_M), tl.num_programs(0)
    else:
        first, stop, step = 0, 1, 1
    return first, stop, step


@triton.jit
def row_tile(tile, n_rows, BLOCK_M: tl.constexpr, INT64: tl.constexpr = True):
    """Row tile ``tile``'s rows, as int64 (a row times its stride may pass 2^31), and their mask;
    ``INT64`` False: as int32, where the launcher found that every row's offset fits (SMALL_OFFSETS)."""
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < n_rows
    if INT64:
        rows = rows.to(tl.int64)
    return rows, row_mask


@triton.jit
def column_block(col_start, n_cols, BLOCK_N: tl.constexpr):
    """The columns of the BLOCK_N-wide block from ``col_start`` and their mask."""
    cols = col_start + tl.arange(0, BLOCK_N)
    return cols, cols < n_cols


@triton.jit
def tile_mask(row_mask, col_mask, EVEN_M: tl.constexpr, EVEN_N: tl.constexpr):
    """The (BLOCK_M, BLOCK_N) tile's mask: rows, columns or both (unused, hence free, when both are even)."""
    if EVEN_M:
        mask = col_mask[None, :]
    elif EVEN_N:
        mask = row_mask[:, None]
    else:
        mask = row_mask[:, None] & col_mask[None, :]
    return mask


# ----------------------------------------------------------------------------
# Quantization


@triton.jit
def row_amax(y, col_mask, EVEN_N: tl.constexpr):
    """Each row's largest |y| in fp32, padding columns excluded."""
    if EVEN_N:
        amax = tl.max(tl.abs(y.to(tl.float32)), axis=1)
    else:
        amax = tl.max(tl.where(col_mask[None, :], tl.abs(y.to(tl.float32)), 0.0), axis=1)
    return amax


@triton.jit
def row_nan(y, col_mask, EVEN_N: tl.constexpr):
    """Per row: 0, or NaN where the row holds a NaN (a sum keeps NaN where max may drop it)."""
    a = y.to(tl.float32)
    if not EVEN_N:
        a = tl.where(col_mask[None, :], a, 0.0)
    return tl.sum(tl.where(a == a, 0.0, a), axis=1)


@triton.jit
def max_keep_nan(a, b):
    """tl.maximum that returns NaN where either side is NaN (the GPU's max drops NaN)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def row_amax_nan(y, col_mask, EVEN_N: tl.constexpr):
    """Each row's largest |y| in fp32, NaN where the row holds a NaN, padding columns excluded:
    one reduction (row_amax and row_nan take two; the cuda kernels use this one)."""
    a = tl.abs(y.to(tl.float32))
    if not EVEN_N:
        a = tl.where(col_mask[None, :], a, 0.0)
    return tl.reduce(a, 1, max_keep_nan)


@triton.jit
def quotient_by_row(y, scale):
    """y / scale[:, None] in fp32 for what quantizing divides (|y| <= max|y| = qmax * scale,
    scale >= 1e-12): one correctly rounded reciprocal per row, then per element a product and
    its fma correction (Markstein), three operations in place of a division. The result is
    tl.math.div_rn's, bit for bit, wherever |y / scale| >= 2^-60 and scale is finite, but for a
    zero y, whose quotient is +0 (below 2^-60 the remainder or the quotient can fall under fp32's
    normal range and the quotient be an ulp off, where it quantizes to 0 either way). A row of
    infinite scale gives NaN (the division: 0, or NaN for an infinite y). int8 takes it as it is
    (its codes have no -0, and NaN goes to 0 as that 0 does); div_by_row gives both as the division does."""
    rcp = tl.math.div_rn(1.0, scale)[:, None]
    q0 = y * rcp
    return tl.fma(tl.fma(-q0, scale[:, None], y), rcp, q0)  # the remainder y - q0 * scale is exact in an fma


@triton.jit
def div_by_row(y, scale, SELECT: tl.constexpr):
    """y / scale[:, None] as tl.math.div_rn gives it, bit for bit, for what quantizing divides
    (|y| <= qmax * scale) wherever |y / scale| >= 2^-60 or y is 0 (tests/test_quantize.py: every bf16
    and fp16 y on a GPU, both forms): quotient_by_row's three operations, with a zero y's sign (-0 /
    scale is -0, which e4m3 stores) and a row of infinite scale (0 with y's sign, or NaN for an
    infinite y, as the division gives; a NaN scale gives NaN) taken care of in one of two forms,
    whichever ptxas schedules better (H200, 2026-11-29; docs/bench/family/fp8-div.md):

    * SELECT (the fp8 kernels on fp32 rows): quotient_by_row's quotient, or q0 = y * (1 / scale) by a
      select per element where y is 0 or the scale infinite (q0 is the zero with its sign, and y * 0);
    * else (16-bit rows, where with the unselected e4m3 conversion add_layernorm_fp8 took 0.90-0.96x
      the time; on fp32 rows this form made add_rmsnorm_fp8's widest single pass spill, up to 3.1x the
      time): the remainder with its sign turned, q0 * scale - y (exact in an fma, and the negated
      y - q0 * scale where it is not 0), added times -1/scale, a second correctly rounded reciprocal
      per row. A zero remainder adds a zero to q0 in either form, and for a zero y the remainder is +0
      and q0 is that zero with its sign: no select per element. A row of infinite scale takes 0 for it
      (a select per row), so the remainder is 0 - y and the quotient q0 plus (0 - y) times -0: a 0 with
      y's sign, or NaN for an infinite y. The remainder's 0 - y is written out: Triton up to 3.6
      compiles -y so, later versions as a negation (-0 for +0); the result is the same either way, and
      0 - y keeps the code what was measured and tested with Triton 3.6."""
    rcp = tl.math.div_rn(1.0, scale)
    q0 = y * rcp[:, None]
    if SELECT:
        q1 = tl.fma(tl.fma(-q0, scale[:, None], y), rcp[:, None], q0)
        return tl.where((scale < float("inf"))[:, None] & (y != 0.0), q1, q0)
    minus_rcp = tl.math.div_rn(-1.0, scale)  # exactly -rcp, and -0 where the scale is infinite
    finite = tl.where(scale < float("inf"), scale, 0.0)
    return tl.fma(tl.fma(q0, finite[:, None], 0.0 - y), minus_rcp[:, None], q0)


@triton.jit
def round_half_even_small(v):
    """fp32 v rounded to the nearest integer, ties to even, for |v| < 2^22: adding and taking
    away 1.5 * 2^23 leaves no fraction bits, and fp32 addition rounds ties to even (two
    additions in place of round_half_even's floors and compares)."""
    return (v + 12582912.0) - 12582912.0


@triton.jit
def round_half_even(v):
    """fp32 v rounded to the nearest integer, ties to even (torch.round's rule), as fp32."""
    v_floor = tl.floor(v)
    v_frac = v - v_floor
    v_odd = (v_floor - 2.0 * tl.floor(v_floor * 0.5)) == 1.0
    return tl.where((v_frac > 0.5) | ((v_frac == 0.5) & v_odd), v_floor + 1.0, v_floor)


@triton.jit
def int8_code(v, NATIVE: tl.constexpr):
    """fp32 v as int8: rounded half to even (torch.round's rule), saturated to [-128, 127], NaN
    (a row of NaN scale) to 0. NATIVE: by the device's own conversion (cuda: one cvt.rni.sat,
    which does all three; not in the interpreter); else clamped and rounded by an addition."""
    if NATIVE:
        code = tl.inline_asm_elementwise(
            "cvt.rni.sat.s8.f32 $0, $1;", "=r,r", [v], dtype=tl.int32, is_pure=True, pack=1
        ).to(tl.int8)
    else:
        code = tl.where(v != v, 0.0, round_half_even_small(tl.minimum(tl.maximum(v, -128.0), 127.0))).to(tl.int8)
    return code


@triton.jit
def fp8_e4m3_bits(v):
    """The float8_e4m3fn bit pattern (uint8) of fp32 v in [-448, 448], rounded to nearest even."""
    sign = (v.to(tl.int32, bitcast=True) >> 24) & 0x80
    a = tl.abs(v)
    # normal numbers (|v| >= 2^-6): keep 3 of fp32's 23 mantissa bits, ties to even,
    # then re-bias the exponent from 127 to 7
    bits = a.to(tl.int32, bitcast=True)
    bits = (bits + 0x7FFFF + ((bits >> 20) & 1)) & 0x7FF00000
    normal = (bits >> 20) - (120 << 3)
    # subnormals (|v| < 2^-6): multiples of 2^-9, rounded half to even
    m = round_half_even(a * 512.0)
    code = tl.where(a < 0.015625, m.to(tl.int32), normal)
    return (code | sign).to(tl.uint8)


@triton.jit
def fp8_e4m3_code(v, NATIVE: tl.constexpr):
    """fp32 v as float8_e4m3fn's bit pattern (uint8): rounded to nearest even, saturated to
    [-448, 448], NaN (a row of NaN scale) to e4m3fn's NaN code 0x7F. NATIVE: by the device's own
    conversion (cuda, compute capability 8.9 and up: cvt.rn.satfinite, which rounds and saturates;
    not in the interpreter); else clamped, selected and encoded by fp8_e4m3_bits.

    The conversion also gives 0x7F for NaN (every fp32 bit pattern checked on an H200,
    tests/test_quantize.py), so the native form has no select. It had one until 2026-11-29: beside
    div_by_row's select form on 16-bit rows, ptxas scheduled the kernels' tail worse without it
    (1.03-1.08x the time at 8192 columns from 512 rows, docs/bench/family/fp8-code.md); beside the
    form 16-bit rows now take, and on fp32 rows, the select costs time instead
    (docs/bench/family/fp8-div.md)."""
    if NATIVE:
        code = v.to(tl.float8e4nv).to(tl.uint8, bitcast=True)
    else:
        code = tl.where(v != v, 0x7F, fp8_e4m3_bits(tl.minimum(tl.maximum(v, -448.0), 448.0)).to(tl.int32)).to(tl.uint8)
    return code


@triton.jit
def sum_partials(P_ptr, OUT_ptr, n_programs, n_cols, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
    """OUT[g] = the sum over p of P[g, p] in fp32, cast to OUT's dtype: the backward's per-program
    partial sums of dw (and db), gradient g = program_id(1), BLOCK_N columns per program.

    A fixed order (BLOCK_P-row strips added up per column, then their rows summed by one
    reduction): the result is the same run to run. num_warps: Triton's default (4).
    """
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    grad = tl.program_id(1).to(tl.int64)
    P_ptr += grad * n_programs * n_cols
    acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    for start in range(0, n_programs, BLOCK_P):
        rows = start + tl.arange(0, BLOCK_P)
        mask = (rows[:, None] < n_programs) & col_mask[None, :]
        acc += tl.load(P_ptr + rows.to(tl.int64)[:, None] * n_cols + cols[None, :], mask=mask, other=0.0)
    tl.store(OUT_ptr + grad * n_cols + cols, tl.sum(acc, axis=0).to(OUT_ptr.dtype.element_ty), mask=col_mask)


if interpreting():  # the interpreter would fold max_keep_nan per element
    import numpy as np

    from .interpreter import fold_in_numpy

    fold_in_numpy(max_keep_nan, np.max)
