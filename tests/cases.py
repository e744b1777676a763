"""Inputs and calls shared by the numerics tests of every generated op."""

from __future__ import annotations

import importlib
import itertools

import torch

import generated
from dsl import pipeline, runtime
from dsl.model import NormSpec

SPECS = {spec.name: spec for spec in pipeline.load_specs(pipeline.SPECS)}

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
WIDTHS = (128, 111, 2048, 4097, 7338, 8300)  # npu: 4097, 7338 one pass (dsl/tuning/npu.json), 8300 multi
ROWS = (0, 1, 3, 57)
LAYOUTS = ("2d", "3d", "strided")


def leading_shape(rows: int, layout: str) -> tuple[int, ...]:
    if layout != "3d":
        return (rows,)
    for group in (19, 3, 1):
        if rows % group == 0 and rows:
            return (rows // group, group)
    return (0, 5)


def make_activation(shape, n_cols, dtype, device, layout, pad, generator):
    """A (..., n_cols) tensor; 'strided' rows are longer than n_cols (row stride > width)."""
    if layout == "strided":
        base = torch.randn(*shape, n_cols + pad, generator=generator, dtype=torch.float32)
        return base.to(device=device, dtype=dtype)[..., :n_cols]
    return torch.randn(*shape, n_cols, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def make_inputs(spec: NormSpec, rows: int, n_cols: int, dtype, device, layout, seed=0, with_bias=True, params=None):
    """x (and residual) in ``dtype``; weight and bias in ``params`` (None: ``dtype``; fp32 weights hold
    values no 16-bit dtype has, so a kernel that rounded them would show)."""
    params = params or dtype
    generator = torch.Generator().manual_seed(seed * 7919 + rows * 31 + n_cols)
    shape = leading_shape(rows, layout)
    inputs = {"x": make_activation(shape, n_cols, dtype, device, layout, 37, generator)}
    if spec.has_residual:
        inputs["residual"] = make_activation(shape, n_cols, dtype, device, layout, 5, generator)
    if spec.has_weight:
        inputs["weight"] = (1.0 + 0.5 * torch.randn(n_cols, generator=generator)).to(device=device, dtype=params)
    if spec.has_bias and with_bias:
        inputs["bias"] = (0.1 * torch.randn(n_cols, generator=generator)).to(device=device, dtype=params)
    return inputs


def call(spec: NormSpec, inputs: dict, norm_pos=None, stats=True, eps=None, inplace=False, package=generated):
    """Call the generated op with every optional output asked for; returns a dict of outputs."""
    op = getattr(package, spec.name)
    kwargs = dict(inputs)
    if inplace:
        kwargs["inplace"] = True
    if eps is not None:
        kwargs["eps"] = eps
    if spec.has_residual:
        kwargs["norm_pos"] = norm_pos
    if stats and spec.stores_mean:
        kwargs["return_mean"] = True
    if stats and spec.stores_rstd:
        kwargs["return_rstd"] = True
    result = op(**kwargs)
    result = result if isinstance(result, tuple) else (result,)
    names = ["q" if spec.is_quantized else "y"]
    names += ["residual_out"] if spec.has_residual else []
    names += ["scale"] if spec.is_quantized else []
    names += ["mean"] if stats and spec.stores_mean else []
    names += ["rstd"] if stats and spec.stores_rstd else []
    assert len(result) == len(names), f"{spec.name} returned {len(result)} outputs, expected {names}"
    return dict(zip(names, result, strict=True))


def rows_for(spec: NormSpec, width: int, dtype: str | None = None) -> tuple[int, ...]:
    """The row counts checked at a width (and, for a shipped op, a dtype).

    triton-ascend's interpreter reduces element by element in Python, so a
    quantized multi-pass case with 57 rows takes 10-20 s there (under 1 s in
    upstream's). Its multi-pass row blocks hold at most 4 rows, so 3 rows
    already cover a masked row tile; the npu run checks those cases at 0, 1, 3.

    57 rows are left out where they launch nothing that 3 rows do not
    (``same_launch``): the same kernel with the same constexprs, a grid of one
    program per row tile, and at least two tiles at 3 rows. 57 rows then only
    add programs running the code that 3 rows' second and third programs run.
    """
    rows = ROWS
    if runtime.INTERPRET and runtime.INTERPRET_TARGET == "npu" and spec.is_quantized and width > 2048:
        rows = tuple(r for r in ROWS if r <= 4)
    if dtype is not None and 57 in rows and same_launch(spec.name, dtype, width, 3, 57):
        rows = tuple(r for r in rows if r != 57)
    return rows


def same_launch(name: str, dtype: str, width: int, few: int, many: int) -> bool:
    """Whether ``many`` rows launch a shipped op's kernel exactly as ``few`` rows do, but for
    more programs (see rows_for); False for ops that are not shipped."""
    target = runtime.INTERPRET_TARGET if runtime.INTERPRET else "cuda"
    try:
        launcher = importlib.import_module(f"generated.{name}_{target}").LAUNCHER
    except ModuleNotFoundError:
        return False
    if any(launcher.table.lookup(dtype, rows, width).grid != "tiles" for rows in (few, many)):
        return False  # (decided without a grid: a persistent one would ask the device for its cores)
    kernel, grid, options, _ = launcher.decide(dtype, few, width, 0)
    kernel_many, _, options_many, _ = launcher.decide(dtype, many, width, 0)
    return kernel is kernel_many and options == options_many and grid[0] >= 2


def modes(spec: NormSpec) -> tuple:
    return tuple(m.value for m in spec.residual) or (None,)


def matrix(spec: NormSpec, full_layouts: bool):
    """(dtype, mode, width, rows, layout) cases: every layout for each case, or one, cycling."""
    cases = []
    combos = [
        (dtype, mode, width, rows)
        for dtype, mode, width in itertools.product([d.value for d in spec.dtypes], modes(spec), WIDTHS)
        for rows in rows_for(spec, width, dtype)
    ]
    for i, (dtype, mode, width, rows) in enumerate(combos):
        layouts = LAYOUTS if full_layouts else (LAYOUTS[i % len(LAYOUTS)],)
        cases += [(dtype, mode, width, rows, layout) for layout in layouts]
    return cases
