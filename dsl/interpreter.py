"""Triton's interpreter, made to reduce normgen's own combine functions with numpy (hand-written).

Triton's interpreter hands a reduction whose combine function it knows (``tl.max``'s,
``tl.sum``'s, ...) to numpy, and folds any other one element by element, a Python call of
the interpreted combine function per element. The cuda quantized kernels' row amax
(``device.row_amax_nan``) reduces with ``device.max_keep_nan``: a quantized call at 57x7338
took 50 s in the interpreter, 4 s with its reduction in numpy.

``fold_in_numpy(fn, fold)`` routes the reductions whose combine function is ``fn`` (that
function object; no other) to ``fold``, numpy's reduction along an axis, which must give
the values of the element-by-element fold: ``tests/test_interpreter_folds.py`` checks every
registered pair against it (NaNs, signed zeros, infinities, ties, each axis and dtype).
``dsl/device.py`` registers its combine function when ``TRITON_INTERPRET=1``; outside the
interpreter nothing is touched, and a Triton without the interpreter's ``ReduceOps`` keeps
its own fold.

``interpreting()`` says whether Triton runs kernels in its interpreter, read from
``TRITON_INTERPRET`` as the installed Triton reads it (``dsl/runtime.py`` and ``dsl/device.py``
ask it, so that normgen never sends CPU tensors to the reference while Triton interprets).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def interpreting() -> bool:
    """TRITON_INTERPRET as Triton reads it: from Triton 3.4 (``triton.knobs``) Triton itself is asked
    (its list of true values: 1, true, on, yes, y, ...); before (triton-ascend's Triton) only 1 is on.
    Unset or 0: off, without importing Triton."""
    value = os.environ.get("TRITON_INTERPRET", "0")
    if value in ("", "0"):
        return False
    spec = importlib.util.find_spec("triton")  # (finds the package without importing it)
    if spec is None or not any((Path(p) / "knobs.py").is_file() for p in spec.submodule_search_locations or ()):
        return value == "1"
    from triton import knobs

    return bool(knobs.runtime.interpret)


FOLDS: list[tuple[object, object]] = []  # (combine function, numpy reduction), in registration order


def fold_in_numpy(fn, fold) -> bool:
    """Reduce with ``fold`` where the interpreter would fold ``fn`` element by element; False where
    this Triton has no interpreter reductions to route, or ``fn`` is routed already."""
    try:
        from triton.runtime.interpreter import ReduceOps
    except ImportError:
        return False
    if any(f is fn for f, _ in FOLDS) or not hasattr(ReduceOps, "min_max"):
        return False
    FOLDS.append((fn, fold))
    if getattr(ReduceOps.apply_impl, "normgen_folds", None) is None:
        element_by_element = ReduceOps.apply_impl

        def apply_impl(self, input):
            fold = next((f for fn, f in FOLDS if fn is self.combine_fn), None)
            if fold is None or len(input) != 1:
                return element_by_element(self, input)
            return self.min_max(input[0], val_reduce_op=fold)

        apply_impl.normgen_folds = FOLDS
        apply_impl.element_by_element = element_by_element
        ReduceOps.apply_impl = apply_impl
    return True
