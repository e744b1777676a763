"""A kernel launch built from the ABI, outside the op: what the tuner measures and checks.

``make_call`` allocates the tensors a kernel reads and writes, by their ABI
source, and lays out the call's arguments and launch key in kernel order;
``launcher_for`` is a ``runtime.Launcher`` of an op's kernels with a one-entry
table (the op's own launcher is untouched); ``check`` compares the outputs with
the op's generated PyTorch reference.
"""

from __future__ import annotations

import importlib

import torch

from benchmarks import timing

EPS = 1e-6


def make_call(
    op: str, mode: str, rows: int, cols: int, dtype: str, device, seed: int = 0, target: str = "cuda"
) -> dict:
    """Tensors by ABI source, the call's arguments (kernel order) and launch key, built from the ABI."""
    from dsl.abi import Kind, Source

    abi = importlib.import_module(f"generated.{op}_{target}").ABI
    torch_dtype = timing.DTYPES[dtype]
    elements = {"x": torch_dtype, "fp32": torch.float32, "int8": torch.int8, "uint8": torch.uint8}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for p in abi.of_kind(Kind.POINTER):
        if p.source in (Source.X, Source.RESIDUAL):
            tensors[p.source] = torch.randn(rows, cols, generator=generator).to(device, torch_dtype)
        elif p.source in (Source.WEIGHT, Source.BIAS):
            tensors[p.source] = (1 + 0.1 * torch.randn(cols, generator=generator)).to(device, torch_dtype)
        elif p.source in (Source.OUT, Source.RESIDUAL_OUT):
            tensors[p.source] = torch.empty(rows, cols, dtype=elements[p.element], device=device)
        elif p.source is Source.SCALE:
            tensors[p.source] = torch.empty(rows, 1, dtype=torch.float32, device=device)
        # mean and rstd are not asked for: None, their switches False
    values = {Source.N_ROWS: rows, Source.N_COLS: cols, Source.EPS: EPS, Source.MODE_PRE: mode == "pre"}
    values |= {Source.BIAS_GIVEN: Source.BIAS in tensors, Source.MEAN_ASKED: False, Source.RSTD_ASKED: False}
    args, key = [], [torch_dtype]
    for p in abi.call:
        value = cols if p.kind is Kind.ROW_STRIDE else tensors.get(p.source, values.get(p.source))
        args.append(value)
        if p.launch_key:
            key.append(value)
    return {"tensors": tensors, "args": tuple(args), "key": tuple(key), "abi": abi}


def call_bytes(call: dict, mode: str) -> int:
    """Bytes one launch of the call moves: every tensor make_call built, read or written once (the
    weight and bias rows too), but the residual out in post mode, where only a quantized op writes
    (its unquantized y): ``benchmarks/ops.py``'s ``bytes_moved`` for any op, from its ABI."""
    from dsl.abi import Source

    tensors = call["tensors"]
    unused = {Source.RESIDUAL_OUT} if mode == "post" and Source.SCALE not in tensors else set()
    return sum(t.numel() * t.element_size() for source, t in tensors.items() if source not in unused)


def check(op: str, spec, call: dict, mode: str) -> None:
    """The kernel's outputs against the op's generated reference (quantized: within one int8 step or
    one fp8 ulp of the dequantized values); raises ValueError on a mismatch."""
    from dsl.abi import Source

    t = call["tensors"]
    reference = getattr(importlib.import_module(f"generated.{op}_reference"), f"{op}_reference")
    inputs = [t[s] for s in (Source.X, Source.RESIDUAL, Source.WEIGHT, Source.BIAS) if s in t]
    out, residual_out, scale, _, _ = reference(*inputs, EPS, *([mode] if spec.has_residual else []))
    problems = []
    if scale is not None:
        got = t[Source.OUT].view(out.dtype).float() * t[Source.SCALE]
        want = out.float() * scale
        if not torch.allclose(got, want, rtol=0.13, atol=float(scale.max()) * 1.01):
            problems.append("q * scale")
        if not torch.allclose(t[Source.SCALE], scale, rtol=2e-2, atol=1e-12):
            problems.append("scale")
    elif not timing.compare(t[Source.OUT], out)[0]:
        problems.append("y")
    if Source.RESIDUAL_OUT in t and (mode == "pre" or scale is not None):
        if not timing.compare(t[Source.RESIDUAL_OUT], residual_out)[0]:
            problems.append("residual out")
    if problems:
        raise ValueError(f"{op} {mode}: {', '.join(problems)} differ from the generated reference")


def launcher_for(
    op: str, dtype: str, passes: str, block_m: int, block_n: int, num_warps: int, grid: str, target: str = "cuda",
    multibuffer: bool = False,
):  # fmt: skip
    """A runtime.Launcher of the op's kernels on a target whose one table entry covers every shape with this config."""
    from dsl import runtime

    module = importlib.import_module(f"generated.{op}_{target}")
    entry = runtime.Entry(dtype, 1, None, 1, None, passes, block_m, block_n, num_warps, grid, multibuffer, 0)
    table = runtime.DispatchTable(op, target, (entry,))
    return runtime.Launcher(table, module.KERNELS, module.ABI, target, dict(module.LAUNCHER.options))
