"""The npu planner's unified-buffer model: what Ascend's compiler plans for a tile.

The model (``ub_least``, ``ub_bytes``) is fitted to
``bishengir-compile``'s memory plans (``benchmarks/npu_calibrate.py``; both
figures per representative kernel in ``docs/npu/ub-plan.md``): the compiler
holds several fp32 working tiles per input tile, and the quantized kernels a few
hundred bytes per column besides. Per kernel family, lines in rows x cols and cols:

* ``ub_least``, the fit criterion: at or below every plan the compiler made
  without multi-buffering, at or above what it said it needed where it
  overflowed, and over the buffer where it had to fall back; where the survey
  saw only small tiles, steep, so a table does not reach past what the
  compiler was seen to plan. A tile fits when this is within ``UB_BYTES``.
* ``ub_bytes``, the most the compiler plans: at or above every plan it made
  (with the multi-buffered copies where the entry turns multi-buffering on),
  capped at ``UB_BYTES`` (a plan never reaches past the buffer; with more to
  hold, the compiler reuses buffers in place). Multi-buffering is on only where
  the multi-buffered line fits uncapped, so the compiler never has to fall back.

CI (``tests/test_npu_lowering.py``) plans a representative of every layout and
fails on an overflow, a fallback, or a plan above ``ub_bytes``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..model import DTYPE_BYTES, DType, NormSpec, Quantize
from ..table import Pass

UB_BYTES = 192 * 1024  # unified buffer per vector core on A2 parts (the compiler's 1572864 bits)


class Bytes(NamedTuple):
    """A plan's UB bytes as per_element * rows * cols + per_column * cols + fixed."""

    per_element: float
    per_column: float
    fixed: int

    def of(self, rows: int, cols: int) -> int:
        return int(self.per_element * rows * cols + self.per_column * cols + self.fixed)


class Family(NamedTuple):
    """A kernel family's fitted plans: the least it needs, the most it plans without and with
    multi-buffering (None: counted as the whole buffer, and multi-buffering stays off)."""

    least: Bytes
    plenty: Bytes | None
    plenty_multibuffer: Bytes | None


# Keyed by (quantized output, layer norm, residual, 16-bit input, pass); printed by
# `python -m benchmarks.npu_calibrate` from the compiler's plans in docs/npu/ub-survey.jsonl, each
# fitted over the shipped specs of its key (casting modes and weight offsets differ by a few
# percent). The quantized kernels get no plenty figures: their plans with multi-buffering fall
# back (and take the compiler minutes), so they run without it and their plan is counted as the
# whole buffer.
FAMILIES: dict[tuple[str, bool, bool, bool, Pass], Family] = {
    ("fp8_e4m3", False, True, False, Pass.MULTI): Family(Bytes(80.0, 1500.0, -286464), None, None),
    ("fp8_e4m3", False, True, False, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -301472), None, None),
    ("fp8_e4m3", False, True, True, Pass.MULTI): Family(Bytes(80.0, 1500.0, -157920), None, None),
    ("fp8_e4m3", False, True, True, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -190272), None, None),
    ("fp8_e4m3", True, True, False, Pass.MULTI): Family(Bytes(80.0, 1500.0, -207232), None, None),
    ("fp8_e4m3", True, True, False, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -296352), None, None),
    ("fp8_e4m3", True, True, True, Pass.MULTI): Family(Bytes(80.0, 1500.0, -155328), None, None),
    ("fp8_e4m3", True, True, True, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -197696), None, None),
    ("int8", False, True, False, Pass.MULTI): Family(Bytes(80.0, 1500.0, -451456), None, None),
    ("int8", False, True, False, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -509856), None, None),
    ("int8", False, True, True, Pass.MULTI): Family(Bytes(80.0, 1500.0, -446816), None, None),
    ("int8", False, True, True, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -528192), None, None),
    ("int8", True, True, False, Pass.MULTI): Family(Bytes(80.0, 1500.0, -451424), None, None),
    ("int8", True, True, False, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -508320), None, None),
    ("int8", True, True, True, Pass.MULTI): Family(Bytes(80.0, 1500.0, -443616), None, None),
    ("int8", True, True, True, Pass.SINGLE): Family(Bytes(80.0, 1500.0, -526656), None, None),
    ("none", False, False, False, Pass.MULTI): Family(
        Bytes(80.0, 0.0, -499360), Bytes(18.0, 4.0, 352), Bytes(14.0, 32.0, 384)
    ),
    ("none", False, False, False, Pass.SINGLE): Family(
        Bytes(10.25, 4.0, -3744), Bytes(10.0, 4.0, 1312), Bytes(14.0, 4.0, 1440)
    ),
    ("none", False, False, True, Pass.MULTI): Family(
        Bytes(18.0, 0.0, 20512), Bytes(18.0, 22.0, 352), Bytes(8.0, 60.0, 384)
    ),
    ("none", False, False, True, Pass.SINGLE): Family(
        Bytes(10.0, 6.0, 40), Bytes(1.5, 0.0, 172128), Bytes(21.75, 6.0, 2464)
    ),
    ("none", False, True, False, Pass.MULTI): Family(
        Bytes(22.0, 0.0, 8256), Bytes(18.0, 20.0, 352), Bytes(42.0, 8.0, 384)
    ),
    ("none", False, True, False, Pass.SINGLE): Family(
        Bytes(10.0, 4.0, 64), Bytes(13.75, 4.0, 3488), Bytes(21.75, 4.0, 2784)
    ),
    ("none", False, True, True, Pass.MULTI): Family(
        Bytes(14.75, 0.0, 47136), Bytes(2.0, 86.0, 352), Bytes(6.0, 72.0, 64)
    ),
    ("none", False, True, True, Pass.SINGLE): Family(
        Bytes(8.75, 10.0, 4144), Bytes(0.0, 1.0, 190816), Bytes(4.25, 9.0, 139360)
    ),
    ("none", True, False, False, Pass.MULTI): Family(
        Bytes(80.0, 0.0, -466880), Bytes(0.75, 89.0, 64), Bytes(2.0, 86.0, 128)
    ),
    ("none", True, False, False, Pass.SINGLE): Family(
        Bytes(12.75, 9.0, -12896), Bytes(13.5, 17.0, 9024), Bytes(18.0, 17.0, 3040)
    ),
    ("none", True, False, True, Pass.MULTI): Family(
        Bytes(80.0, 0.0, -470976), Bytes(10.75, 51.0, 768), Bytes(1.0, 88.0, 128)
    ),
    ("none", True, False, True, Pass.SINGLE): Family(
        Bytes(19.0, 12.0, -85888), Bytes(9.25, 8.0, 68836), Bytes(22.0, 17.0, 4752)
    ),
    ("none", True, True, False, Pass.MULTI): Family(
        Bytes(80.0, 0.0, -462784), Bytes(2.0, 86.0, 160), Bytes(10.0, 74.0, 292)
    ),
    ("none", True, True, False, Pass.SINGLE): Family(
        Bytes(24.75, 20.0, -188032), Bytes(2.25, 1.0, 164672), Bytes(20.25, 13.0, 27940)
    ),
    ("none", True, True, True, Pass.MULTI): Family(
        Bytes(8.0, 0.0, 122912), Bytes(0.0, 92.0, 320), Bytes(1.5, 90.0, 1344)
    ),
    ("none", True, True, True, Pass.SINGLE): Family(
        Bytes(25.5, 25.0, -205696), Bytes(2.0, 3.0, 161856), Bytes(6.0, 7.0, 136576)
    ),
}


def family(spec: NormSpec, dtype: DType, passes: Pass) -> Family:
    """The calibrated family of a spec's kernel. A key no shipped spec calibrates borrows, in this
    order, the figures of the residual sibling, the layer-norm sibling (each a superset of its
    buffers), the other 16-/32-bit input, the other pass."""
    quant = spec.quantize.value if spec.quantize is not Quantize.NONE else "none"
    narrow = DTYPE_BYTES[dtype] < 4
    for other_pass in (passes, Pass.SINGLE if passes is Pass.MULTI else Pass.MULTI):
        for other_narrow in (narrow, not narrow):
            for layer in (spec.is_layer, True, False):
                for residual in (spec.has_residual, True):
                    found = FAMILIES.get((quant, layer, residual, other_narrow, other_pass))
                    if found:
                        return found
    raise KeyError(f"no calibrated npu unified-buffer figures for {quant} kernels")


def ub_least(spec: NormSpec, dtype: DType, passes: Pass, rows: int, cols: int) -> int:
    """The fewest UB bytes the compiler can plan the tile in (its fit criterion)."""
    return family(spec, dtype, passes).least.of(rows, cols)


# With 16-bit x, the weight and bias rows may be fp32 (a call-time choice; the same entry serves both).
# The families are fitted to half rows; with fp32 ones the compiler plans up to this many more bytes
# per column and parameter row (layer norms, whose fp32 weight and bias plans rise by up to 8128
# bytes at 2048 columns; the RMS norms' fall), which ub_bytes counts always. The fit criterion
# (ub_least) is unchanged: every memory layout's widest tile plans without overflow or fallback with
# fp32 rows too (docs/npu/ub-plan.md, the `w=fp32` rows; tests/test_npu_lowering.py plans them).
FP32_PARAM_ROW = 2


def ub_bytes(spec: NormSpec, dtype: DType, passes: Pass, rows: int, cols: int, multibuffer: bool) -> int:
    """The most UB bytes the compiler plans for the tile (never more than the buffer), with parameter
    rows of x's dtype or, for 16-bit x, fp32."""
    fam = family(spec, dtype, passes)
    plenty = fam.plenty_multibuffer if multibuffer else fam.plenty
    if plenty is None:
        return UB_BYTES
    fp32_rows = FP32_PARAM_ROW * (spec.has_weight + spec.has_bias) * cols if DTYPE_BYTES[dtype] < 4 else 0
    return min(UB_BYTES, max(plenty.of(rows, cols) + fp32_rows, fam.least.of(rows, cols)))


def multibuffer_fits(spec: NormSpec, dtype: DType, passes: Pass, rows: int, cols: int) -> bool:
    """Multi-buffering without the compiler's fallback: its plan with the copies fits outright."""
    plenty = family(spec, dtype, passes).plenty_multibuffer
    return plenty is not None and plenty.of(rows, cols) <= UB_BYTES
