"""The interpreter's ``_patch_lang``, skipped where the language is patched already (tests/interpreter_lang_once.py),
gives the same kernels' results and leaves ``triton.language`` as the interpreter itself does.

Runs in either interpreter (upstream Triton's in the main run, triton-ascend's in the npu
run). A kernel calls ``@triton.jit`` device functions, one of them nested and one from
normgen's own device module, in every program of several launches: the results must be the
formula's, every device call must be skipped and every launch must patch once (the first
launch only, in triton-ascend's, which never restores), each skip must find no builtin the
original would replace (checked the original's way, every member), and upstream's
interpreter must leave the language modules with exactly the members they had before.
"""

from __future__ import annotations

import pytest
import torch

from dsl import runtime

from . import interpreter_lang_once

pytestmark = pytest.mark.skipif(not runtime.INTERPRET, reason="needs TRITON_INTERPRET=1 (the CPU interpreter)")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

from dsl.device import max_keep_nan  # noqa: E402

N = 16


@triton.jit
def square(x):
    return x * x


@triton.jit
def square_plus_one(x):
    return square(x) + 1.0  # a device function calling another


@triton.jit
def kernel(X_ptr, Y_ptr, M_ptr, N: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, N)
    x = tl.load(X_ptr + row * N + cols)
    tl.store(Y_ptr + row * N + cols, square_plus_one(x) + square(x))
    tl.store(M_ptr + row, tl.reduce(x, 0, max_keep_nan))


def language_state() -> dict:
    """Every member of the modules and classes _patch_lang patches, by identity."""
    pkgs = (tl, tl.core, tl.math, tl.tensor)
    return {(pkg.__name__, name): id(value) for pkg in pkgs for name, value in vars(pkg).items()}


def test_the_wrapper_is_installed_in_test_sessions():
    assert getattr(interpreter._patch_lang, "normgen_once", False), "tests/conftest.py installs it"
    assert not interpreter_lang_once.install(), "installing twice wraps twice"


@pytest.mark.parametrize("rows", [1, 5])
def test_device_calls_skip_the_patch_and_launches_give_the_formula(rows, monkeypatch):
    monkeypatch.setattr(interpreter_lang_once, "VERIFY", True)
    restores = hasattr(interpreter, "_LangPatchScope")  # upstream's interpreter restores after each launch
    x = torch.randn(rows, N, generator=torch.Generator().manual_seed(rows))
    # A first launch: upstream's restore leaves a few members set that were inherited before (tensor.__repr__).
    kernel[(rows,)](x, torch.empty_like(x), torch.empty(rows), N=N)
    before = language_state()
    calls = dict(interpreter_lang_once.CALLS)
    for _ in range(3):
        y, m = torch.empty_like(x), torch.empty(rows)
        kernel[(rows,)](x, y, m, N=N)
        torch.testing.assert_close(y, (x * x + 1.0) + x * x, rtol=0, atol=0)  # the kernel's order
        torch.testing.assert_close(m, x.max(dim=1).values, rtol=0, atol=0)
    original = interpreter_lang_once.CALLS["original"] - calls["original"]
    skipped = interpreter_lang_once.CALLS["skipped"] - calls["skipped"]
    assert skipped >= 3 * rows * 3, f"device calls skipped: {skipped}"  # square twice, square_plus_one, per program
    if restores:
        assert original == 3, f"upstream's interpreter: one patch per launch, got {original}"
        assert language_state() == before, "the language modules differ from before the launches"
    else:
        assert original <= 1, f"triton-ascend's interpreter: at most the session's first patch, got {original}"
