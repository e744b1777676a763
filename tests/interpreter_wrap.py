"""Replace one function of Triton's interpreter by a wrapper, once: what the test sessions' interpreter
changes (``tests/interpreter_lang_once.py``, ``tests/interpreter_bf16_casts.py``) share."""

from __future__ import annotations

import importlib


def wrap(name: str, marker: str, build) -> bool:
    """Set ``triton.runtime.interpreter.<name>`` to ``build(interpreter, original)``, marked with ``marker``
    and holding the original as ``.original``; False where there is no interpreter, no such function,
    or it is wrapped already."""
    try:
        interpreter = importlib.import_module("triton.runtime.interpreter")
    except ImportError:
        return False
    original = getattr(interpreter, name, None)
    if original is None or getattr(original, marker, False):
        return False
    wrapper = build(interpreter, original)
    setattr(wrapper, marker, True)
    wrapper.original = original
    setattr(interpreter, name, wrapper)
    return True
