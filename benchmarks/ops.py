"""The benchmark's ops: what each one reads and writes, its peers' formulas, and the output check.

Every impl is a function ``fn(x, r, w, b) -> tuple`` of the op's outputs in the
op's order (``r`` is None for ops without a residual, ``b`` for ops without a
bias): ``(y,)``; ``(y, residual_out)`` for a residual add; ``(q, residual_out,
scale)`` for the quantized ops. The peers write the spec's math with the same
rounding steps as the op's casting mode (README's spec reference):

* llama: statistics in fp32, x_hat rounded to the input dtype, then times w;
* gemma: everything in fp32 (the gemma ops: times 1 + w), one rounding at the end;
* quantized: that norm in the input dtype, then per row amax / 127 or 448 as the
  scale, y / scale rounded (int8) and clamped, or cast to float8_e4m3fn.

Importing this module makes no CUDA call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks import timing


@dataclass(frozen=True)
class Op:
    name: str
    norm: str  # "rms" or "layer"
    casting: str  # "llama" or "gemma"
    residual: bool
    quant: str | None = None  # None, "int8" or "fp8"
    offset: float = 0.0  # the weight is used as offset + w (gemma_*: 1)
    liger: str | None = None  # Liger-Kernel's function for this op, if Liger has it

    @property
    def bias(self) -> bool:
        return self.norm == "layer"

    @property
    def eps(self) -> float:
        return 1e-5 if self.norm == "layer" else 1e-6

    @property
    def modes(self) -> tuple[str, ...]:
        return ("pre", "post") if self.residual else ("-",)


OPS = {
    op.name: op
    for op in (
        Op("add_rmsnorm", "rms", "llama", True, liger="fused_add_rms_norm"),
        Op("rmsnorm", "rms", "llama", False, liger="rms_norm"),
        Op("layernorm", "layer", "gemma", False, liger="layer_norm"),
        Op("add_layernorm", "layer", "gemma", True),
        Op("gemma_add_rmsnorm", "rms", "gemma", True, offset=1.0, liger="fused_add_rms_norm"),
        Op("gemma_rmsnorm", "rms", "gemma", False, offset=1.0, liger="rms_norm"),
        Op("add_rmsnorm_int8", "rms", "llama", True, "int8"),
        Op("add_rmsnorm_fp8", "rms", "llama", True, "fp8"),
        Op("add_layernorm_int8", "layer", "gemma", True, "int8"),
        Op("add_layernorm_fp8", "layer", "gemma", True, "fp8"),
    )
}
QMAX = {"int8": 127.0, "fp8": 448.0}


def modes_of(op: str, modes: list[str]) -> list[str]:
    """The residual modes asked for where the op has a residual; "-" for the ops without one."""
    return list(modes) if OPS[op].residual else ["-"]


def bytes_moved(op: str, mode: str, rows: int, cols: int, elem: int) -> int:
    """Bytes the op must move: x (and r) read; y written (1 byte an element when quantized, plus a
    float32 scale per row); the residual out (pre: s; quantized post: the unquantized y) written;
    the weight (and bias) once."""
    spec = OPS[op]
    out_elem = 1 if spec.quant else elem
    tensors = elem * (2 if spec.residual else 1) + out_elem
    if spec.residual and (mode == "pre" or spec.quant):
        tensors += elem
    params = (2 if spec.bias else 1) * cols * elem
    return tensors * rows * cols + params + (4 * rows if spec.quant else 0)


def make_inputs(op: str, rows: int, cols: int, dtype: str, sets: int, device="cuda", seed: int = 0) -> list[tuple]:
    """``sets`` (x, r, w, b) tuples; r and b are None where the op has none; every set shares w and b."""
    spec = OPS[op]
    generator = torch.Generator(device=device).manual_seed(seed)
    torch_dtype = timing.DTYPES[dtype]

    def randn(*shape):
        return torch.randn(*shape, device=device, generator=generator)

    w = (1.0 - spec.offset + 0.1 * randn(cols)).to(torch_dtype)
    b = (0.1 * randn(cols)).to(torch_dtype) if spec.bias else None
    result = []
    for _ in range(sets):
        x = randn(rows, cols).to(torch_dtype)
        r = randn(rows, cols).to(torch_dtype) if spec.residual else None
        result.append((x, r, w, b))
    return result


# ----------------------------------------------------------------------------
# The impls


def torch_function(op: str, mode: str) -> Callable:
    """Eager PyTorch: the spec's math with the op's rounding steps."""
    spec = OPS[op]
    eps = spec.eps

    def norm(s, w, b):
        if spec.norm == "layer":  # F.layer_norm: fp32 statistics and affine part, one rounding (gemma casting)
            return F.layer_norm(s, (s.shape[-1],), w, b, eps)
        s32 = s.float()
        x_hat = s32 * torch.rsqrt(s32.square().mean(-1, keepdim=True) + eps)
        if spec.casting == "llama":  # x_hat rounded to the input dtype, then times w
            return x_hat.to(s.dtype) * w
        return (x_hat * (spec.offset + w.float())).to(s.dtype)

    def quantize(y):
        y32 = y.float()
        scale = (y32.abs().amax(-1, keepdim=True) / QMAX[spec.quant]).clamp(min=1e-12)
        v = y32 / scale
        if spec.quant == "int8":
            return v.round().clamp(-128.0, 127.0).to(torch.int8), scale
        return v.clamp(-448.0, 448.0).to(torch.float8_e4m3fn), scale

    def formula(x, r, w, b):
        if not spec.residual:
            return (norm(x, w, b),)
        s = x + r
        y = norm(s, w, b)
        if spec.quant:
            q, scale = quantize(y)
            return q, s if mode == "pre" else y, scale
        return y, s if mode == "pre" else y

    formula.__name__ = f"{op}_{'pre' if mode == 'pre' else 'post'}"
    return formula


def compiled_function(op: str, mode: str) -> Callable:
    """torch.compile of the eager formula, static shapes, compiled afresh per shape (on its first call)."""
    torch._dynamo.reset()  # one shape's graphs at a time: no recompile limit, no stale guards
    return torch.compile(torch_function(op, mode), dynamic=False)


def liger_function(op: str, mode: str) -> Callable:
    """Liger-Kernel's function for the op (llama or gemma casting, gemma with offset 1)."""
    spec = OPS[op]
    if spec.liger is None:
        raise LookupError(f"Liger-Kernel has no {op}")
    eps, offset, casting = spec.eps, spec.offset, spec.casting
    if spec.liger == "fused_add_rms_norm":
        from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction

        fused = LigerFusedAddRMSNormFunction.apply

        def liger_fused(x, r, w, b):  # it writes s in post mode too
            y, s = fused(x, r, w, eps, offset, casting, False)
            return (y, s) if mode == "pre" else (y, y)

        return liger_fused
    if spec.liger == "rms_norm":
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction

        rms = LigerRMSNormFunction.apply
        return lambda x, r, w, b: (rms(x, w, eps, offset, casting, False),)
    from liger_kernel.ops.layer_norm import LigerLayerNormFunction

    layer = LigerLayerNormFunction.apply
    return lambda x, r, w, b: (layer(x, w, b, eps),)


def normgen_function(op: str, mode: str) -> Callable:
    """The generated op, called as users call it."""
    import generated

    spec, fn = OPS[op], getattr(generated, op)
    eps = spec.eps
    if spec.residual and spec.bias:
        return lambda x, r, w, b: fn(x, r, w, b, eps, norm_pos=mode)
    if spec.residual:
        return lambda x, r, w, b: fn(x, r, w, eps, norm_pos=mode)
    if spec.bias:
        return lambda x, r, w, b: (fn(x, w, b, eps),)
    return lambda x, r, w, b: (fn(x, w, eps),)


MAKERS = {"normgen": normgen_function, "torch": torch_function, "compile": compiled_function, "liger": liger_function}


def has_impl(op: str, impl: str) -> bool:
    return impl != "liger" or OPS[op].liger is not None


# ----------------------------------------------------------------------------
# The output check


def reference(op: str, mode: str, inputs: tuple) -> tuple:
    """The op's generated PyTorch reference on these inputs: its outputs in the op's order."""
    spec = OPS[op]
    fn = getattr(importlib.import_module(f"generated.{op}_reference"), f"{op}_reference")
    x, r, w, b = inputs
    args = [x, *([r] if spec.residual else []), w, *([b] if spec.bias else []), spec.eps]
    out, residual_out, scale, _, _ = fn(*args, *([mode] if spec.residual else []))
    if spec.quant:
        return out, residual_out, scale
    return (out, residual_out) if spec.residual else (out,)


def check(op: str, mode: str, got: tuple, want: tuple) -> tuple[bool, float]:
    """(outputs match the reference, largest difference of y or q * scale). Quantized: q * scale
    within one int8 step or fp8 ulp of the reference's, the scale within 2 %; the residual out is
    checked in pre mode and for the quantized ops (their post residual out is the unquantized y)."""
    spec = OPS[op]
    if spec.quant:
        (q, res, scale), (q_ref, res_ref, scale_ref) = got, want
        a, b = q.float() * scale, q_ref.float() * scale_ref
        err = float(torch.nan_to_num((a - b).abs(), nan=float("inf")).max()) if a.numel() else 0.0
        ok = torch.allclose(a, b, rtol=0.13, atol=float(scale_ref.max()) * 1.01)
        ok = ok and torch.allclose(scale.float(), scale_ref, rtol=2e-2, atol=1e-12)
        return ok and timing.compare(res, res_ref)[0], err
    ok, err = timing.compare(got[0], want[0])
    if spec.residual and mode == "pre":
        ok_res, err_res = timing.compare(got[1], want[1])
        ok, err = ok and ok_res, max(err, err_res)
    return ok, err
