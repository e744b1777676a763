"""The launch layout (hand-written): a launch's key and arguments, in kernel order, from the ABI.

A launch's values sit in a launch environment, a tuple in a fixed order per direction;
``layout`` turns the kernels' ABI (``dsl/abi.py``) into getters of the launch key and of
the kernels' arguments over it, per residual mode. The launcher (``dsl/runtime.py``)
takes both.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import NamedTuple

from .abi import Kind, Signature, Source

# The launch environments: the tuples the op surface (dsl/surface.py) and the backward
# (dsl/backward.py) build for a launch of each direction, in this order. The forward's: first
# what changes from call to call (the tensors, eps), then what follows from the launch key
# (row strides, sizes, switches: ``launch_tail``). ``layout`` turns an ABI into index lists over one of them.
_ENV = (
    Source.X, Source.RESIDUAL, Source.WEIGHT, Source.BIAS,
    Source.OUT, Source.RESIDUAL_OUT, Source.SCALE, Source.MEAN, Source.RSTD, Source.EPS,
    "x_stride", "residual_stride", "out_stride", "residual_out_stride",
    Source.N_ROWS, Source.N_COLS, Source.BIAS_GIVEN, Source.MEAN_ASKED, Source.RSTD_ASKED,
    True, False, "dtype", "param_dtype",
)  # fmt: skip
PER_CALL = _ENV.index(Source.EPS) + 1  # the environment's first PER_CALL values change from call to call
_STRIDE = {Source.X: "x_stride", Source.RESIDUAL: "residual_stride", Source.OUT: "out_stride"}
_STRIDE[Source.RESIDUAL_OUT] = "residual_out_stride"
BACKWARD_ENV = (
    Source.GRAD_OUT, Source.GRAD_RESIDUAL_OUT, Source.X, Source.RESIDUAL, Source.WEIGHT, Source.MEAN, Source.RSTD,
    Source.GRAD_X, Source.GRAD_WEIGHT, Source.GRAD_BIAS,
    "dy_stride", "ds_stride", "x_stride", "residual_stride", "dx_stride",
    Source.N_ROWS, Source.N_COLS, Source.GRAD_RESIDUAL_GIVEN, Source.BIAS_GIVEN, True, False, "dtype", "param_dtype",
)  # fmt: skip
_BACKWARD_STRIDE = {Source.GRAD_OUT: "dy_stride", Source.GRAD_RESIDUAL_OUT: "ds_stride", Source.X: "x_stride"}
_BACKWARD_STRIDE.update({Source.RESIDUAL: "residual_stride", Source.GRAD_X: "dx_stride"})


def launch_tail(
    strides: tuple,
    n_rows: int,
    n_cols: int,
    bias_given: bool,
    mean_asked: bool,
    rstd_asked: bool,
    dtype,
    param_dtype=None,
):
    """The launch environment after its per-call values; ``strides``: x's, residual's, out's, residual out's;
    ``param_dtype``: the weight's and bias's (x's dtype, or fp32 with 16-bit x; None: x's)."""
    return (*strides, n_rows, n_cols, bias_given, mean_asked, rstd_asked, True, False, dtype, param_dtype or dtype)


class Layout(NamedTuple):
    """A launch's key and arguments taken from the launch environment, for one residual mode."""

    key: Callable[[tuple], tuple]  # environment -> launch key: x's dtype, the ABI's launch-key values, param dtype
    args: Callable[[tuple], tuple]  # environment -> the kernels' arguments, in ABI order


def _position(param, mode: str | None, env: tuple, strides: dict) -> int:
    """Where a parameter's value sits in a launch environment, in a call of residual mode ``mode``."""
    if param.kind is Kind.ROW_STRIDE:
        return env.index(strides[param.source])
    if param.source is Source.MODE_PRE:
        return env.index(mode == "pre")
    return env.index(param.source)


def layout(abi: Signature, mode: str | None, backward: bool = False) -> Layout:
    """The launch key and argument getters over the launch environment of the direction, from the kernels' ABI."""
    env, strides = (BACKWARD_ENV, _BACKWARD_STRIDE) if backward else (_ENV, _STRIDE)
    # the parameters' dtype closes the key: Triton compiles a kernel per pointer dtype, so a direct launch
    # compiled for a bf16 weight must never serve an fp32 one
    positions = (_position(p, mode, env, strides) for p in abi.key)
    key = operator.itemgetter(env.index("dtype"), *positions, env.index("param_dtype"))
    return Layout(key, operator.itemgetter(*(_position(p, mode, env, strides) for p in abi.call)))
