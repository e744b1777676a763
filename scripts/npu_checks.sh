#!/usr/bin/env bash
# The npu checks, in the triton-ascend virtual environment (bash scripts/npu_env.sh builds it):
# every npu dispatch entry's kernels (forward and backward) lower through triton-ascend's compiler to the ttadapter
# stage (each kernel text at the tile sizes that bound it; NORMGEN_NPU_LOWER_ALL=1: every tile size), and a representative of every memory layout plans its unified buffer in Ascend's
# bishengir-compile with no overflow, no fallback and no more than the planner's model
# (tests/test_npu_lowering.py), and the numerics matrix and the user specs run the npu
# kernels in triton-ascend's interpreter with the real npu block sizes (its max/min reductions
# vectorized by tests/interpreter_folds.py, checked against its own fold by tests/test_interpreter_folds.py; its
# language patching, bf16 casts and type lookups made quicker by tests/interpreter_lang_once.py, tests/interpreter_bf16_casts.py
# and tests/interpreter_np_dtypes.py,
# checked against the originals by their tests).
#
#   bash scripts/npu_checks.sh [extra pytest arguments, e.g. -k add_rmsnorm]
#
# CI runs this as its own step. NORMGEN_NPU_VENV picks the venv (default .venv-npu).
set -euo pipefail

cd "$(dirname "$0")/.."
venv="${NORMGEN_NPU_VENV:-.venv-npu}"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "npu checks: no triton-ascend venv at $venv (bash scripts/npu_env.sh builds it)" >&2
    exit 1
fi
cache="$(mktemp -d)"  # a failed compile is cached: start clean
trap 'rm -rf "$cache"' EXIT
# -n: one worker per core (NORMGEN_NPU_WORKERS overrides); every selected test must run (the lowering tests skip outside triton-ascend,
# the numerics ones without the interpreter), so skips fail the step.
env -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV \
    TRITON_INTERPRET=1 NORMGEN_INTERPRET_TARGET=npu TRITON_CACHE_DIR="$cache" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider -n "${NORMGEN_NPU_WORKERS:-$(nproc)}" \
    tests/test_npu_lowering.py tests/test_numerics.py tests/test_user_specs.py tests/test_safety.py tests/test_casting.py \
    tests/test_backward.py tests/test_interpreter_folds.py tests/test_interpreter_lang_once.py \
    tests/test_interpreter_bf16_casts.py tests/test_interpreter_np_dtypes.py \
    -k "lowering or interpreter or user" -r s "$@" | tee "$cache/out.txt"
if grep -Eq "(^|[^0-9])[1-9][0-9]* skipped" "$cache/out.txt"; then  # not "0 skipped" (the run summary line)
    echo "npu checks: tests were skipped in $venv; every npu test must run there" >&2
    exit 1
fi
# The npu tuner's candidates (one pass over rows wider than 2048, the column loop) in the interpreter.
env -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV TRITON_INTERPRET=1 NORMGEN_INTERPRET_TARGET=npu \
    TRITON_CACHE_DIR="$cache" "$venv/bin/python" -m benchmarks.npu_tune --self-test
