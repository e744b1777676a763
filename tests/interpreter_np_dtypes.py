"""Triton's interpreter's element types, looked up once per type instead of rebuilt at every call.

Both interpreters (upstream Triton's and triton-ascend's) find the numpy type of a
Triton type with ``_get_np_dtype``, which builds its table of nineteen types (hashing
each key) at every call. It runs for every splat, cast, masked load and null value, in
every program of every launch: cProfile put 6.9 of 58 s there for 504 of the npu
numerics cases in triton-ascend's interpreter (2026-11-28), the 7 million calls of
``dtype.__hash__`` almost all from those tables.

``install`` wraps it: a pointer type, or a block of pointers, is ``uint64`` (as in the
original, which looks no further); any other type, or a block's element type, gets the
answer the original gave for that element type the first time it was asked (a type the
original does not know raises there, every time, and is not remembered). The original's
answer depends on nothing but the type, so every result is the original's.
``tests/test_interpreter_np_dtypes.py`` compares the two on every type of
``triton.language``, their pointers and blocks of both. Only the test sessions install
this (``tests/conftest.py``): Triton's internals are not normgen's to patch in users' sessions.
"""

from __future__ import annotations

from .interpreter_wrap import wrap


def install() -> bool:
    """Wrap the interpreter's ``_get_np_dtype``; False where there is none to wrap or it is wrapped."""
    return wrap("_get_np_dtype", "normgen_np_dtypes", _remembering)


def _remembering(interpreter, original):
    tl = interpreter.tl
    pointer_type, block_type = tl.pointer_type, tl.block_type
    answers: dict = {}  # a scalar Triton type (hashed and compared by name) -> the original's numpy type
    pointer = original(tl.pointer_type(tl.int8))

    def _get_np_dtype(tt_dtype):
        element = tt_dtype.element_ty if isinstance(tt_dtype, block_type) else tt_dtype
        if isinstance(element, pointer_type):  # pointer types define __eq__ without __hash__: not dict keys
            return pointer
        found = answers.get(element)
        if found is None:
            found = answers[element] = original(element)
        return found

    return _get_np_dtype
