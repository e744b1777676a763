"""triton-ascend's interpreter reduces ``tl.max`` element by element in Python: hand it to numpy, same values.

Triton's interpreter hands a reduction whose combine function it knows (upstream's
``_elementwise_max``, ``_sum_combine``, ...) to numpy, and folds any other one
element by element through the interpreted combine function (``generic_reduce``).
triton-ascend's ``tl.max`` and ``tl.min`` reduce with their own combine functions
(``triton_patch/language/standard.py``: ``core.maximum(a, b)`` with or without NaN
propagation), which the interpreter does not know: every row amax of the quantized
kernels then costs a Python call per element: a quantized 2048x57 case of the npu run
(scripts/npu_checks.sh) took 14.4 CPU-s, 1.6 with this module.

Folded by the interpreter, both combine functions come to numpy's NaN-propagating
``np.maximum`` (``create_maxnumf`` and ``create_maximumf`` both are) and ``np.minimum``
over the input's own dtype: ``np.max`` / ``np.min`` along the axis give the same
values (a NaN's payload bits apart, which no check reads), as
``tests/test_npu_interpreter_reduce.py`` checks against the fold itself (NaNs, rows of
NaNs, signed zeros, infinities, ties; each axis and the whole tile; each dtype). Only the test session of the npu run
installs this (``tests/conftest.py``); the kernels and their compiles are untouched.
"""

from __future__ import annotations

import importlib

import numpy as np

# triton-ascend's combine functions (triton.triton_patch.language.standard) -> numpy's reduction
FOLDS = {
    "_elementwise_max_default": np.max,
    "_elementwise_max_propagate_nan": np.max,
    "_elementwise_min": np.min,
}


def combine_functions() -> tuple:
    """(interpreted combine function, numpy's reduction) pairs this module vectorizes (none outside
    triton-ascend's interpreter)."""
    try:
        standard = importlib.import_module("triton.triton_patch.language.standard")
        interpreter = importlib.import_module("triton.runtime.interpreter")
    except ImportError:
        return ()
    if not hasattr(interpreter, "ReduceOps"):
        return ()
    return tuple((getattr(standard, name), fold) for name, fold in FOLDS.items() if hasattr(standard, name))


def install() -> bool:
    """Route triton-ascend's max and min reductions to numpy in the interpreter; False where there
    is nothing to route (not triton-ascend, or already installed)."""
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
