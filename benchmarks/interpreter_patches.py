"""The test sessions' interpreter speed-ups, for the self-tests (CI runs them as it runs the tests).

``tests/conftest.py`` installs four changes to Triton's interpreter in every test session
(``tests/interpreter_*.py``; each is checked against the original by its own test and changes no bit
of a kernel's results, only its time). The ``--self-test`` runs of the tuner and the benchmarks launch
kernels in the same interpreter, in processes of their own, so they install them too: the tuner's
self-test took 16.5 s of CPU with them against 29.5 s without (2026-11-29, 2 cores). Never installed
outside a self-test: Triton's internals are not normgen's to patch in users' sessions.
"""

from __future__ import annotations


def install() -> None:
    """Install them; call once, after TRITON_INTERPRET=1 is set and before any kernel runs."""
    from tests import interpreter_bf16_casts, interpreter_folds, interpreter_lang_once, interpreter_np_dtypes

    for module in (interpreter_folds, interpreter_lang_once, interpreter_bf16_casts, interpreter_np_dtypes):
        module.install()
