"""The npu checks, run from the main venv inside the triton-ascend one.

triton-ascend ships its own package named ``triton``, so the npu kernels are
checked in a second virtual environment (``bash scripts/npu_env.sh`` builds it;
``.ci/run`` does so before the tests). There this test runs
``tests/test_npu_lowering.py`` (every npu dispatch entry's kernels lower to the
``ttadapter`` stage) and the numerics matrix of ``tests/test_numerics.py`` in
triton-ascend's interpreter, with the real npu block sizes.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / os.environ.get("NORMGEN_NPU_VENV", ".venv-npu")  # an absolute path replaces ROOT
PYTHON = VENV / "bin" / "python"
PYTEST_ARGS = (
    # -n 2: both cores (the main run waits meanwhile)
    *("-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2"),
    *("tests/test_npu_lowering.py", "tests/test_numerics.py", "tests/test_user_specs.py", "tests/test_safety.py"),
    *("-k", "lowering or interpreter or user"),
)
TIMEOUT_S = 60 * 60  # a hung run fails here instead of stalling CI
SUMMARY = re.compile(r"(\d+) (passed|failed|error|skipped|deselected|xfailed|xpassed|warning)s?\b")


def summary_counts(output: str) -> dict[str, int]:
    """pytest's last line, e.g. '512 passed, 3 deselected in 80.1s', as {'passed': 512, ...}."""
    lines = output.strip().splitlines()
    return {word: int(n) for n, word in SUMMARY.findall(lines[-1] if lines else "")}


def tail(output: str, lines: int = 60) -> str:
    return "\n".join(output.splitlines()[-lines:])


@pytest.mark.skipif(not PYTHON.exists(), reason=f"no triton-ascend venv at {VENV}: run bash scripts/npu_env.sh")
def test_npu_lowering_and_interpreter_in_triton_ascend_venv(tmp_path, record_property):
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(
        TRITON_INTERPRET="1",  # CPU tensors run the kernels in the interpreter...
        NORMGEN_INTERPRET_TARGET="npu",  # ...the npu ones, under triton-ascend
        TRITON_CACHE_DIR=str(tmp_path / "triton-cache"),  # a failed compile is cached; start clean
    )
    try:
        run = subprocess.run(
            [str(PYTHON), *PYTEST_ARGS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired as error:
        output = error.stdout or ""
        output = output.decode(errors="replace") if isinstance(output, bytes) else output
        pytest.fail(f"the npu tests ran over {TIMEOUT_S} s in {VENV}:\n{tail(output)}")
    output = run.stdout + run.stderr
    command = f"cd {ROOT} && TRITON_INTERPRET=1 NORMGEN_INTERPRET_TARGET=npu {shlex.join([str(PYTHON), *PYTEST_ARGS])}"
    where = f"\n(to rerun: {command})\n\n{tail(output)}"
    assert run.returncode == 0, f"the npu tests failed in {VENV} (exit {run.returncode}){where}"
    counts = summary_counts(run.stdout)
    assert counts.get("passed", 0) > 0 and not counts.get("failed") and not counts.get("error"), (
        f"unexpected pytest summary {counts}{where}"
    )
    # Every selected test must have run there: the lowering tests skip outside triton-ascend,
    # the numerics ones without the interpreter.
    assert not counts.get("skipped"), f"{counts['skipped']} npu tests skipped in {VENV}{where}"
    # for conftest's "what ran where" line: the run's pytest summary and its own "normgen: ..." line
    lines = run.stdout.strip().splitlines()
    where_ran = next((line.removeprefix("normgen: ") for line in lines if line.startswith("normgen: ")), "")
    record_property("npu_venv_summary", lines[-1] + (f" ({where_ran})" if where_ran else ""))
