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


# ----------------------------------------------------------------------------
# The rounding steps of each casting mode, emulated one by one


def rounder(dtype, interpreter: bool):
    """fp32 tensor -> its value after the kernel's cast to ``dtype`` (as fp32).

    Hardware and torch round to nearest even; both Triton interpreters
    (upstream's and triton-ascend's) truncate fp32 -> bf16 instead, and a test
    that knows which rounding to expect can then compare exactly.
    """
    if dtype is torch.float32:
        return lambda t: t.float()
    if dtype is torch.bfloat16 and interpreter:
        return lambda t: (t.float().view(torch.int32) & -65536).view(torch.float32)
    return lambda t: t.float().to(dtype).float()


def stepwise(spec: NormSpec, casting: str, x, residual=None, weight=None, bias=None, eps=None, rnd=None):
    """(y in x's dtype, s, magnitude) with the rounding steps of a casting mode (README: llama, gemma, none).

    ``magnitude`` (fp32) is |x_hat * w| + |b|: where y cancels to near zero, a
    rounding step before the bias add is an ulp of this size, not of y.

    ``casting`` may differ from the spec's: the other modes' results show that a
    test can tell them apart. Statistics are computed in float64 and rounded to
    fp32 once (the kernels accumulate in fp32; their order differs).
    """
    eps = spec.eps if eps is None else eps
    s = rnd(x.float() + residual.float()) if residual is not None else x.float()
    s64 = s.double()
    mean64 = s64.mean(-1, keepdim=True) if spec.is_layer else torch.zeros_like(s64[..., :1])
    rstd = torch.rsqrt((s64 - mean64).square().mean(-1, keepdim=True) + eps).float()
    mean = mean64.float()
    if casting == "none":
        mean, rstd = rnd(mean), rnd(rstd)
    w = None
    if weight is not None:
        w = weight.float() + spec.weight.offset
        if casting == "none" and spec.weight.has_offset:
            w = rnd(w)
    b = bias.float() if bias is not None else None
    centered = s - mean if spec.is_layer else s
    if casting == "none":
        x_hat = rnd(rnd(centered) * rstd) if spec.is_layer else rnd(centered * rstd)
        y = rnd(x_hat * w) if w is not None else x_hat
        if b is not None:
            y = rnd(y + b)
    else:
        x_hat = centered * rstd
        if casting == "llama":
            x_hat = rnd(x_hat)
        y = x_hat * w if w is not None else x_hat
        if b is not None:
            y = y + b
        y = rnd(y)
    magnitude = (x_hat * w).abs() if w is not None else x_hat.abs()
    if b is not None:
        magnitude = magnitude + b.abs()
    return y.to(x.dtype), s.to(x.dtype), magnitude


def exact_fraction(actual, expected) -> float:
    return (actual == expected).double().mean().item() if actual.numel() else 1.0


def assert_steps_match(actual, expected, what, magnitude=None, min_exact=0.99, max_steps=4):
    """Half-precision outputs against the emulated rounding steps: equal almost everywhere.

    The kernels' fp32 statistics differ from the emulation's in the last bits,
    which can move a rounding by one step where a value lies near a tie. That
    is rare, so nearly every element must match exactly; where one does not, an
    intermediate rounding that moved by a step can grow by the weight (or show
    as a large relative error where y + b cancels), so the few others may be up
    to ``max_steps`` ulps of the larger of |y| and ``magnitude`` away.
    """
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    if actual.numel() == 0:
        return
    fraction = exact_fraction(actual, expected)
    larger = torch.maximum(actual.double().abs(), expected.double().abs())
    if magnitude is not None:
        larger = torch.maximum(larger, magnitude.double())
    step = ulp(larger.to(actual.dtype))
    err = (actual.double() - expected.double()).abs()
    far = err > max_steps * step * 1.0001
    if far.any() or fraction < min_exact:
        index = tuple(int(i) for i in torch.unravel_index((err / step).flatten().argmax(), actual.shape))
        raise AssertionError(
            f"{what}: {fraction:.4%} of elements equal the emulated rounding steps (need {min_exact:.0%}), "
            f"{int(far.sum())} more than {max_steps} steps away; worst at {index}: got {actual[index].item()!r}, "
            f"expected {expected[index].item()!r}"
        )
