"""conftest's closing line says what ran where; checked on a few tests run in a fresh pytest."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SELECTION = [
    "tests/test_module_dtypes.py::test_dtype_and_device_make_the_parameters_and_the_output[rmsnorm]",  # an op on CPU
    "tests/test_docstrings.py::test_both_modes_are_documented_where_the_spec_has_both",  # no op call
    "tests/test_numerics.py::test_gpu",  # the gpu tests: skipped without a GPU
]


def start_pytest(interpret: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("NORMGEN_INTERPRET_TARGET", "PYTEST_ADDOPTS")}
    env["TRITON_INTERPRET"] = interpret
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SELECTION]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def output(run: subprocess.Popen) -> str:
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stdout + stderr
    return stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine's line (no GPU)")
def test_summary_line_counts_the_interpreter_the_reference_and_no_op():
    runs = {interpret: start_pytest(interpret) for interpret in ("1", "0")}  # both at once: each mostly imports
    try:
        interpreted, reference = output(runs["1"]), output(runs["0"])
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.wait()
    assert (
        "normgen: of the tests that ran, 0 ran kernels on the GPU, 1 ran cuda kernels in Triton's interpreter, "
        "1 called no op (specs, planner, build, lowering); "
    ) in interpreted, interpreted
    assert "no CUDA GPU on this machine (torch.cuda.is_available() is False)" in interpreted

    assert (
        "normgen: of the tests that ran, 0 ran kernels on the GPU, 1 ran ops on the PyTorch reference, "
        "1 called no op (specs, planner, build, lowering); "
    ) in reference, reference
