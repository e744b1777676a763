"""Triton's interpreter's bf16 <-> fp32 casts, done with a shift where that gives its own bits.

Both interpreters (upstream Triton's and triton-ascend's) cast between bf16 and fp32
(``.to()``, without a rounding mode) through ``_convert_float``, which takes every value
apart into sign, exponent and significand with numpy. Where any value's exponent field is
zero, a zero included, it first walks the significand's bits one at a time (23 passes
over the array for fp32), and the masked loads of normgen's kernels hold zeros in
nearly every tile. The two formats share sign and exponent fields, so for every value
with a nonzero exponent field, and for the zeros, its result is the fp32 bits shifted
right by 16 (truncation: no rounding mode) or the bf16 bits shifted left by 16.

``install`` wraps ``_convert_float`` to compute those values by the shift and to hand
the rest, the nonzero subnormals, to the original, so every result is the bits the
interpreter gives. Other pairs of types and casts with a rounding mode go to the
original unchanged. ``tests/test_interpreter_bf16_casts.py`` compares the two on every
bf16 pattern and on every fp32 sign, exponent and upper significand with several lower
halves, the subnormals included. Only the test sessions install this
(``tests/conftest.py``): Triton's internals are not normgen's to patch in users' sessions.
"""

from __future__ import annotations

import numpy as np

from .interpreter_wrap import wrap

CALLS = {"shifted": 0, "original": 0}  # casts done by the shift, and handed to the original


def install() -> bool:
    """Wrap the interpreter's ``_convert_float``; False where there is none to wrap or it is wrapped."""
    return wrap("_convert_float", "normgen_shift", _shifting)


def _shifting(interpreter, original):
    tl = interpreter.tl
    # (input type, output type) -> (input's bits as unsigned, input's exponent and significand fields)
    pairs = {
        (tl.float32, tl.bfloat16): (np.uint32, np.uint32(0x7F800000), np.uint32(0x007FFFFF)),
        (tl.bfloat16, tl.float32): (np.uint16, np.uint16(0x7F80), np.uint16(0x007F)),
    }

    def _convert_float(input, input_dtype, output_dtype, rounding_mode):
        types = pairs.get((input_dtype, output_dtype)) if rounding_mode is None else None
        if types is None:
            CALLS["original"] += 1
            return original(input, input_dtype, output_dtype, rounding_mode)
        in_type, exponent_field, significand_field = types
        bits = np.frombuffer(input.tobytes(), dtype=in_type)
        if in_type is np.uint32:
            output = (bits >> 16).astype(np.uint16)
        else:
            output = bits.astype(np.uint32) << 16
        subnormal = ((bits & exponent_field) == 0) & ((bits & significand_field) != 0)  # zeros: shifted
        if subnormal.any():
            CALLS["original"] += 1
            output[subnormal] = original(bits[subnormal].view(input.dtype), input_dtype, output_dtype, None)
        else:
            CALLS["shifted"] += 1
        return output.reshape(input.shape)

    return _convert_float
