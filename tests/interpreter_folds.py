"""triton-ascend's ``tl.max`` and ``tl.min`` reductions, handed to numpy in its interpreter: same values.

triton-ascend's ``tl.max`` and ``tl.min`` reduce with their own combine functions
(``triton_patch/language/standard.py``: ``core.maximum(a, b)`` with or without NaN
propagation), which its interpreter does not know, so it folds them element by element
(``generic_reduce``): every row amax of the npu quantized kernels then costs a Python call
per element (a quantized 2048x57 case of the npu run took 14.4 CPU-s, 1.6 with this module).
Folded by the interpreter, both combine functions come to numpy's NaN-propagating
``np.maximum`` (``create_maxnumf`` and ``create_maximumf`` both are) and ``np.minimum`` over
the input's own dtype: ``np.max`` / ``np.min`` along the axis give the same values (a NaN's
payload bits apart, which no check reads), as ``tests/test_interpreter_folds.py`` checks
against the fold itself. The routing is ``dsl/interpreter.py``'s, which ``dsl/device.py``
uses for normgen's own combine function in either interpreter. Only the test sessions
install this one (``tests/conftest.py``): triton-ascend's functions are not normgen's to
patch in users' sessions.
"""

from __future__ import annotations

import importlib

import numpy as np

from dsl.interpreter import fold_in_numpy

# triton-ascend's combine functions (triton.triton_patch.language.standard) -> numpy's reduction
ASCEND_FOLDS = {
    "_elementwise_max_default": np.max,
    "_elementwise_max_propagate_nan": np.max,
    "_elementwise_min": np.min,
}


def install() -> int:
    """Route triton-ascend's max and min reductions to numpy in its interpreter; how many were
    routed (0 under upstream Triton, or when already routed)."""
    try:
        standard = importlib.import_module("triton.triton_patch.language.standard")
    except ImportError:  # upstream Triton: its interpreter reduces tl.max and tl.min with numpy itself
        return 0
    pairs = [(getattr(standard, name), fold) for name, fold in ASCEND_FOLDS.items() if hasattr(standard, name)]
    return sum(fold_in_numpy(fn, fold) for fn, fold in pairs)
