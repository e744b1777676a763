"""An independent float64 formula for every norm a spec can describe.

Written from the definitions (not from the generated reference) so that the
kernels and the reference are both checked against the same mathematics.
"""

from __future__ import annotations

import torch

from dsl.model import NormSpec

# Relative error budgets against float64, by dtype: a few roundings of the output.
RTOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
ATOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def oracle(spec: NormSpec, x, residual=None, weight=None, bias=None, eps=None, norm_pos="pre"):
    """(y, s, mean, rstd) in float64; s is the residual sum as torch computes x + r."""
    eps = spec.eps if eps is None else eps
    s = x + residual if residual is not None else x
    s64 = s.double()
    mean = s64.mean(-1, keepdim=True) if spec.is_layer else torch.zeros_like(s64[..., :1])
    var = (s64 - mean).square().mean(-1, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    y = (s64 - mean) * rstd
    if weight is not None:
        y = y * (weight.double() + spec.weight.offset)
    if bias is not None:
        y = y + bias.double()
    return y, s, mean.squeeze(-1), rstd.squeeze(-1)


def ulp(t: torch.Tensor) -> torch.Tensor:
    """The spacing of t's dtype at each element's magnitude (as float64)."""
    finfo = torch.finfo(t.dtype)
    mantissa = {torch.float32: 23, torch.float16: 10, torch.bfloat16: 7}[t.dtype]
    a = t.double().abs().clamp(min=finfo.tiny)
    return torch.exp2(torch.floor(torch.log2(a)) - mantissa)


def assert_close(actual, expected, *, rtol, atol, what):
    """torch.testing.assert_close with a report naming the worst element."""
    actual64, expected64 = actual.double(), expected.double()
    if actual.numel() == 0:
        assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        return
    assert not torch.isnan(actual64).any(), f"{what}: NaN in output"
    err = (actual64 - expected64).abs()
    bound = atol + rtol * expected64.abs()
    bad = err > bound
    if bad.any():
        flat = (err - bound).flatten().argmax().item()
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), actual.shape))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {actual.numel()} elements out of tolerance "
            f"(rtol={rtol}, atol={atol}); worst at {index}: got {actual64[index].item()!r}, "
            f"expected {expected64[index].item()!r}"
        )


def assert_within_ulps(actual, expected, ulps, what):
    """Elementwise |actual - expected| <= ulps * ulp(expected), in expected's dtype."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    if actual.numel() == 0:
        return
    err = (actual.double() - expected.double()).abs()
    bad = err > ulps * ulp(expected)
    if bad.any():
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(int(bad.flatten().nonzero()[0])), actual.shape))
        raise AssertionError(
            f"{what}: {int(bad.sum())} elements beyond {ulps} ulp; first at {index}: "
            f"got {actual[index].item()!r}, expected {expected[index].item()!r}"
        )
