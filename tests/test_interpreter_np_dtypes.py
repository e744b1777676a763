"""The interpreter's element types looked up once (tests/interpreter_np_dtypes.py) are the original's answers.

Runs in either interpreter (upstream Triton's in the main run, triton-ascend's in the npu
run). Every type that ``triton.language`` defines, a pointer to each, and blocks of both
(asked twice: the second answer comes from the table) get the original's numpy type; a
type the original does not know raises as it does, every time.
"""

from __future__ import annotations

import pytest

from dsl import runtime

from . import interpreter_np_dtypes

pytestmark = pytest.mark.skipif(not runtime.INTERPRET, reason="needs TRITON_INTERPRET=1 (the CPU interpreter)")

import triton.language as tl  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

wrapped = interpreter._get_np_dtype
original = getattr(wrapped, "original", None)


def scalar_types() -> list:
    found = {value.name: value for value in vars(tl.core).values() if type(value) is tl.dtype}
    assert {"int1", "int8", "uint8", "int32", "int64", "fp16", "bf16", "fp32", "fp64", "fp8e4nv"} <= set(found), sorted(
        found
    )
    return list(found.values())


def test_the_wrapper_is_installed_in_test_sessions():
    assert getattr(wrapped, "normgen_np_dtypes", False) and original is not None, "tests/conftest.py installs it"
    assert not interpreter_np_dtypes.install(), "installing twice wraps twice"


def test_every_type_gets_the_originals_answer():
    def answer(function, t):
        try:
            return function(t)
        except Exception as error:  # the original's table does not hold every type (void, fp8e4b15x4, ...)
            return type(error)

    asked = 0
    for scalar in scalar_types():
        for t in (scalar, tl.pointer_type(scalar), tl.block_type(scalar, [4]), tl.block_type(scalar, [2, 8])):
            for _ in range(2):  # the second time from the table (or failing again)
                assert answer(wrapped, t) == answer(original, t), t
            asked += 1
        pointers = tl.block_type(tl.pointer_type(scalar), [16])
        assert wrapped(pointers) == original(pointers), pointers
    assert asked >= 60, asked
    assert wrapped(tl.bfloat16).itemsize == 2 and wrapped(tl.float8e4nv).itemsize == 1
