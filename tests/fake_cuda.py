"""The cuda device that tests/trace_cuda.py fakes (it has no GPU to ask), in one place.

``tests/trace_cuda.py`` traces the ops on fake cuda tensors in a subprocess and installs this
device for good; ``tests/test_compiled.py`` asks the eager launcher what it decides on the same
device (``faked()``, put back after) and compares. A launch decision the runtime reads off the
device is listed here once, so the two cannot fake different devices.
"""

from __future__ import annotations

import contextlib

from dsl import runtime

SM_COUNT = 132  # an H100's
DEVICE = {
    "cuda_sm_count": lambda device_index: SM_COUNT,
    "cuda_native_fp8": lambda device_index: False,  # as the interpreter decides, which the tests compare with
    "cuda_native_int8": lambda device_index: False,  # the same
}


def install() -> None:
    """The runtime asks the fake device from now on (a process that has no GPU to ask)."""
    for name, decide in DEVICE.items():
        setattr(runtime, name, decide)


@contextlib.contextmanager
def faked():
    """The runtime asks the fake device inside the block; what it asked before, after."""
    before = {name: getattr(runtime, name) for name in DEVICE}
    install()
    try:
        yield
    finally:
        for name, decide in before.items():
            setattr(runtime, name, decide)
