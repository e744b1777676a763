"""The op surface's launches (dsl/surface.py), checked without a GPU.

A tensor subclass that says it is on CUDA takes both the eager fast path and the
checked path to the launch, where a recording launcher stands in for the
kernels. Both paths must pass the same launch key and arguments, and every
argument must be what the kernel ABI says its parameter is.
"""

import importlib

import pytest
import torch

from dsl.abi import Kind, Source

from .cases import SPECS, make_inputs, modes


class SaysCuda(torch.Tensor):
    """A CPU tensor that answers like a tensor on cuda:0."""

    @property
    def is_cuda(self):
        return True

    def get_device(self):
        return 0


class NotAFloat(float):
    """eps that the fast path does not take (its type is not float); the checks turn it into a float."""


class Recorder:
    def __init__(self, abi):
        self.abi, self.calls = abi, []

    def __call__(self, key, aligned, device, args):
        self.calls.append((key, aligned, device, args))


def _cases():
    for name, spec in sorted(SPECS.items()):
        for mode in modes(spec):
            for stat in ("mean", "rstd"):
                yield name, mode, stat


@pytest.mark.parametrize("name, mode, stat", list(_cases()))
def test_fast_and_checked_paths_launch_what_the_abi_says(name, mode, stat, monkeypatch):
    """``stat``: the one statistic asked for (where the op stores it), so that each switch is seen alone."""
    spec = SPECS[name]
    op = importlib.import_module(f"generated.{name}").OP
    kernels = importlib.import_module(f"generated.{name}_cuda")
    recorder = Recorder(kernels.LAUNCHER.abi)
    monkeypatch.setattr(kernels, "LAUNCHER", recorder)
    monkeypatch.setattr(op, "_launches", {})
    monkeypatch.setattr(op, "_cuda", None)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[spec.dtypes[0].value]
    inputs = {k: t.as_subclass(SaysCuda) for k, t in make_inputs(spec, 6, 64, dtype, "cpu", "2d").items()}
    x, residual, weight, bias = (inputs.get(k) for k in ("x", "residual", "weight", "bias"))
    norm_pos = mode
    asked = {"mean": spec.stores_mean and stat == "mean", "rstd": spec.stores_rstd and stat == "rstd"}
    results = []
    for eps in (1e-5, NotAFloat(1e-5)):
        result = op(x, residual, weight, bias, eps, norm_pos, asked["mean"], asked["rstd"], False)
        results.append(result if isinstance(result, tuple) else (result,))
    assert len(recorder.calls) == 2, "both calls launch once"

    def roles(args):
        named = {id(t): k for k, t in inputs.items()}
        return [named.get(id(a), (a.shape, a.dtype)) if isinstance(a, torch.Tensor) else a for a in args]

    (key_fast, aligned_fast, device_fast, args_fast), (key_checked, *rest, args_checked) = recorder.calls
    assert (key_fast, aligned_fast, device_fast) == (key_checked, *rest)
    assert roles(args_fast) == roles(args_checked)

    # Each argument, against the ABI and the call (not against the surface's own tables).
    abi = recorder.abi
    assert len(args_fast) == len(abi.call)
    value = dict(zip((p.name for p in abi.call), args_fast, strict=True))
    out = results[0][0]
    expected_scalars = {
        Source.N_ROWS: 6,
        Source.N_COLS: 64,
        Source.EPS: 1e-5,
        Source.BIAS_GIVEN: bias is not None,
        Source.MEAN_ASKED: asked["mean"],
        Source.RSTD_ASKED: asked["rstd"],
        Source.MODE_PRE: norm_pos == "pre",
    }
    for p in abi.call:
        got = value[p.name]
        if p.kind is Kind.ROW_STRIDE:
            assert got == 64, p.name
        elif p.kind is Kind.POINTER and p.source.value in inputs:
            assert got is inputs[p.source.value], p.name
        elif p.source is Source.BIAS:
            assert got is None
        elif p.source is Source.OUT:
            assert got.data_ptr() == out.data_ptr() and got.shape == x.shape
        elif p.source in (Source.MEAN, Source.RSTD):
            assert (got is not None) == asked[p.source.value], p.name
        elif p.kind is Kind.POINTER:
            assert isinstance(got, torch.Tensor), p.name
        else:
            assert got == expected_scalars[p.source] and type(got) is type(expected_scalars[p.source]), p.name
    assert key_fast[0] is dtype
    assert key_fast[1:] == tuple(value[p.name] for p in abi.key)
