"""Test configuration.

TRITON_INTERPRET must be set before the generated modules are imported: on a
machine without a GPU it defaults to 1, so CPU tensors run the kernels in
Triton's interpreter; on a GPU machine it defaults to 0 and the `gpu` tests
run the kernels on the device. NORMGEN_INTERPRET_TARGET (cuda or npu) picks
which target's kernels the interpreter runs.
"""

import os

import torch

os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")

import pytest  # noqa: E402

from dsl import runtime  # noqa: E402

HAS_GPU = torch.cuda.is_available() and not runtime.INTERPRET


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (TRITON_INTERPRET unset)")
    for item in items:
        if "gpu" in item.keywords and not HAS_GPU:
            item.add_marker(skip_gpu)
