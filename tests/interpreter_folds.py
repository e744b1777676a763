"""Reductions the interpreters fold element by element in Python, handed to numpy: same values.

Triton's interpreter hands a reduction whose combine function it knows (upstream's
``_elementwise_max``, ``_sum_combine``, ...) to numpy, and folds any other one
element by element through the interpreted combine function (``generic_reduce``):
a Python call per element. Two such reductions run in normgen's tests:

* triton-ascend's ``tl.max`` and ``tl.min`` reduce with their own combine functions
  (``triton_patch/language/standard.py``: ``core.maximum(a, b)`` with or without NaN
  propagation), which its interpreter does not know: every row amax of the npu quantized
  kernels (a quantized 2048x57 case of the npu run took 14.4 CPU-s, 1.6 with this module);
* the cuda quantized kernels' row amax (``dsl/device.py``: ``row_amax_nan`` reduces with
  ``max_keep_nan``, ``tl.maximum`` with ``propagate_nan=ALL``), in upstream's interpreter
  (a quantized user spec at 7338x57 took 50 CPU-s, 467,000 combine calls).

Folded by the interpreter, each of these combine functions comes to numpy's NaN-propagating
``np.maximum`` (``create_maxnumf`` and ``create_maximumf`` in triton-ascend,
``create_maximumf`` upstream) or ``np.minimum`` over the input's own dtype: ``np.max`` /
``np.min`` along the axis give the same values (a NaN's payload bits apart, which no check
reads), as ``tests/test_interpreter_folds.py`` checks against the fold itself (NaNs, rows of
NaNs, signed zeros, infinities, ties; each axis and the whole tile; each dtype). Only test
sessions in the interpreter install this (``tests/conftest.py``); the kernels and their
compiles are untouched.
"""

from __future__ import annotations

import importlib

import numpy as np

# triton-ascend's combine functions (triton.triton_patch.language.standard) -> numpy's reduction
ASCEND_FOLDS = {
    "_elementwise_max_default": np.max,
    "_elementwise_max_propagate_nan": np.max,
    "_elementwise_min": np.min,
}
# normgen's own combine functions (dsl.device) -> numpy's reduction
DEVICE_FOLDS = {"max_keep_nan": np.max}


def combine_functions() -> tuple:
    """(interpreted combine function, numpy's reduction) pairs this module vectorizes: dsl.device's
    under either interpreter, and triton-ascend's own under its interpreter; none outside the
    interpreter."""
    try:
        interpreter = importlib.import_module("triton.runtime.interpreter")
    except ImportError:
        return ()
    if not hasattr(interpreter, "ReduceOps"):
        return ()
    from dsl import device, runtime

    if not runtime.INTERPRET:
        return ()
    pairs = [(getattr(device, name), fold) for name, fold in DEVICE_FOLDS.items()]
    try:
        standard = importlib.import_module("triton.triton_patch.language.standard")
    except ImportError:  # upstream Triton
        return tuple(pairs)
    return tuple(pairs + [(getattr(standard, n), f) for n, f in ASCEND_FOLDS.items() if hasattr(standard, n)])


def install() -> bool:
    """Route the reductions of ``combine_functions`` to numpy in the interpreter; False where there
    is nothing to route (not in the interpreter, or already installed)."""
    folds = combine_functions()
    if not folds:
        return False
    from triton.runtime.interpreter import ReduceOps

    if getattr(ReduceOps.apply_impl, "normgen_folds", None) is not None:
        return False
    element_by_element = ReduceOps.apply_impl

    def apply_impl(self, input):
        fold = next((f for fn, f in folds if fn is self.combine_fn), None)
        if fold is None or len(input) != 1:
            return element_by_element(self, input)
        return self.min_max(input[0], val_reduce_op=fold)

    apply_impl.normgen_folds = folds
    apply_impl.element_by_element = element_by_element
    ReduceOps.apply_impl = apply_impl
    return True
