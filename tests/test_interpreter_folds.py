"""The reductions routed to numpy (dsl/interpreter.py) give what the interpreter folds element by element.

Runs in the interpreter: upstream Triton's (the main test run) checks dsl/device.py's
``max_keep_nan`` reduction; triton-ascend's (the npu run, scripts/npu_checks.sh) checks it
and triton-ascend's ``tl.max`` (with and without NaN propagation) and ``tl.min``
(tests/interpreter_folds.py), whose combine functions upstream's interpreter knows itself.
A kernel reduces tiles holding NaNs (one row all NaN), signed zeros, infinities and ties along each axis and over the
whole tile, in each input dtype; the outputs of the vectorized run and of the
interpreter's own element-by-element fold must be the same bits (NaN payloads apart).
"""

from __future__ import annotations

import pytest
import torch

from dsl import interpreter, runtime

pytestmark = pytest.mark.skipif(not runtime.INTERPRET, reason="needs TRITON_INTERPRET=1 (the CPU interpreter)")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from dsl.device import max_keep_nan  # noqa: E402

M, N = 8, 16


@triton.jit
def reduce_kernel(X_ptr, ROWS_ptr, COLS_ptr, ALL_ptr, OP: tl.constexpr, M: tl.constexpr, N: tl.constexpr):
    rows = tl.arange(0, M)
    cols = tl.arange(0, N)
    x = tl.load(X_ptr + rows[:, None] * N + cols[None, :])
    if OP == 0:
        tl.store(ROWS_ptr + rows, tl.max(x, axis=1))
        tl.store(COLS_ptr + cols, tl.max(x, axis=0))
        tl.store(ALL_ptr, tl.max(x))
    elif OP == 1:
        tl.store(ROWS_ptr + rows, tl.max(x, axis=1, propagate_nan=True))
        tl.store(COLS_ptr + cols, tl.max(x, axis=0, propagate_nan=True))
        tl.store(ALL_ptr, tl.max(x, propagate_nan=True))
    elif OP == 2:
        tl.store(ROWS_ptr + rows, tl.min(x, axis=1))
        tl.store(COLS_ptr + cols, tl.min(x, axis=0))
        tl.store(ALL_ptr, tl.min(x))
    else:
        x = x.to(tl.float32)
        tl.store(ROWS_ptr + rows, tl.reduce(x, 1, max_keep_nan))
        tl.store(COLS_ptr + cols, tl.reduce(x, 0, max_keep_nan))
        tl.store(ALL_ptr, tl.reduce(x, None, max_keep_nan))


def tile(dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(M, N, generator=generator) * 3
    x[0, 3] = x[2, 0] = x[2, 9] = float("nan")
    x[1] = float("nan")  # a row of NaNs only
    x[3, :4] = torch.tensor([0.0, -0.0, -0.0, 0.0])
    x[4] = torch.tensor([-0.0, 0.0] * (N // 2))  # signed zeros only: which one a max keeps shows in the bits
    x[5, 1], x[5, 6] = float("inf"), float("-inf")
    x[6] = 1.5  # ties
    return x.to(dtype)


def run(x: torch.Tensor, op: int) -> list[torch.Tensor]:
    out_dtype = torch.float32  # tl.max and tl.min reduce 16-bit floats in fp32 (triton-ascend promotes them)
    rows, cols, whole = (torch.full((n,), 7.0, dtype=out_dtype) for n in (M, N, 1))
    reduce_kernel[(1,)](x, rows, cols, whole, OP=op, M=M, N=N)
    return [rows, cols, whole]


def same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """NaN where the fold has NaN (its payload bits may differ: no check reads them), else the same
    bits (-0.0 is not 0.0)."""
    nan = torch.isnan(want)
    return torch.equal(torch.isnan(got), nan) and torch.equal(got.view(torch.int32)[~nan], want.view(torch.int32)[~nan])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", [0, 1, 2, 3], ids=["max", "max_propagate_nan", "min", "max_keep_nan"])
def test_interpreter_vectorized_reductions_match_the_fold(op, dtype, monkeypatch):
    from triton.runtime.interpreter import ReduceOps

    if op < 3 and len(interpreter.FOLDS) == 1:
        pytest.skip("upstream Triton's interpreter reduces tl.max and tl.min with numpy itself")
    fast = ReduceOps.apply_impl
    assert getattr(fast, "normgen_folds", None), "dsl/device.py did not route max_keep_nan (dsl/interpreter.py)"
    folds = []
    generic = ReduceOps.generic_reduce
    monkeypatch.setattr(ReduceOps, "generic_reduce", lambda self, input: folds.append(1) or generic(self, input))
    for seed in range(3):
        x = tile(dtype, seed)
        vectorized = run(x, op)
        assert not folds, "the vectorized run still folded element by element"
        monkeypatch.setattr(ReduceOps, "apply_impl", fast.element_by_element)
        folded = run(x, op)
        monkeypatch.setattr(ReduceOps, "apply_impl", fast)
        assert len(folds) == 3, "the reference run must fold element by element (3 reductions)"
        folds.clear()
        for got, want, what in zip(vectorized, folded, ("axis=1", "axis=0", "whole tile"), strict=True):
            assert same(got, want), f"{what}: {got.tolist()} vs the fold's {want.tolist()}"
