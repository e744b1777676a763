"""Gradients of every differentiable op against torch autograd of an independent float64 formula.

The formula below is written here from the definitions (RMS and layer norm, the
Gemma offset, pre and post residual modes), not from the generated reference:
it is evaluated in float64 at the point the forward normalized (s = x + r
rounded to the input dtype, as torch's x + r is) and differentiated by torch
autograd. The ops' gradients (kernels in the interpreter or on the GPU, or the
reference's autograd on CPU) must match it within the input dtype's tolerance.
Rounding steps of the casting modes (llama's rounded x_hat) are inside that
tolerance; test_casting.py tells the modes apart in the forward.

CPU cases are small and cover each kernel path once per target: single pass
(an odd width with masks, a power of two without), multi pass (a width above
the target's backward single-pass limit), 3-D and strided inputs, zero rows,
the gradient on s used or not. The GPU runs the full matrix.
"""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch

import generated
from dsl import runtime
from dsl.checks import NormgenError

from .cases import DTYPES, SPECS, leading_shape, make_activation, modes

DIFFERENTIABLE = sorted(name for name, spec in SPECS.items() if spec.has_backward)
TOLERANCE = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}  # relative to the largest gradient


def oracle(spec, x, residual, weight, bias, eps, norm_pos, gy, gs):
    """Float64 gradients (dx, dresidual, dweight, dbias) of sum(y * gy) (+ sum(s * gs) in pre mode)."""
    dtype = x.dtype
    x, residual, weight, bias = (t.detach() if t is not None else None for t in (x, residual, weight, bias))
    if spec.has_residual:
        s = (x.double() + residual.double()).to(dtype).double()  # the forward's s, rounded once
    else:
        s = x.double()
    s.requires_grad_()
    w = weight.double().requires_grad_() if weight is not None else None
    b = bias.double().requires_grad_() if bias is not None else None
    if spec.is_layer:
        centered = s - s.mean(-1, keepdim=True)
        y = centered / torch.sqrt(centered.square().mean(-1, keepdim=True) + eps)
    else:
        y = s / torch.sqrt(s.square().mean(-1, keepdim=True) + eps)
    if w is not None:
        y = y * (w + spec.weight.offset)
    if b is not None:
        y = y + b
    loss = (y * gy.double()).sum()
    if norm_pos == "pre" and gs is not None:
        loss = loss + (s * gs.double()).sum()
    loss.backward()
    ds = s.grad
    return {"x": ds, "residual": ds if spec.has_residual else None, "weight": w.grad if w is not None else None,
            "bias": b.grad if b is not None else None}  # fmt: skip


def run_case(name, dtype, width, rows, layout, norm_pos, device, use_s=True, with_bias=True, params=None):
    """One gradient check; ``params``: the weight's and bias's dtype (None: x's), whose dw and db must
    come back in it."""
    spec = SPECS[name]
    params = params or dtype
    generator = torch.Generator().manual_seed(rows * 131 + width)
    shape = leading_shape(rows, layout)
    leaves = {"x": make_activation(shape, width, dtype, device, layout, 7, generator)}
    if spec.has_residual:
        leaves["residual"] = make_activation(shape, width, dtype, device, layout, 3, generator)
    if spec.has_weight:
        weight = 1.0 - spec.weight.offset + 0.5 * torch.randn(width, generator=generator)
        leaves["weight"] = weight.to(device=device, dtype=params)
    if spec.has_bias and with_bias:
        leaves["bias"] = (0.1 * torch.randn(width, generator=generator)).to(device=device, dtype=params)
    leaves = {k: v.detach().requires_grad_() for k, v in leaves.items()}
    gy = torch.randn(*shape, width, generator=generator).to(device=device, dtype=dtype)
    gs = torch.randn(*shape, width, generator=generator).to(device=device, dtype=dtype) if use_s else None

    kwargs = dict(leaves)
    if spec.has_residual:
        kwargs["norm_pos"] = norm_pos
    result = getattr(generated, name)(**kwargs)
    y = result[0] if spec.has_residual else result
    assert y.requires_grad and y.grad_fn is not None
    loss = (y * gy).float().sum()
    if spec.has_residual and norm_pos == "pre" and use_s:
        loss = loss + (result[1] * gs).float().sum()
    loss.backward()

    expected = oracle(spec, leaves.get("x"), leaves.get("residual"), leaves.get("weight"), leaves.get("bias"),
                      spec.eps, norm_pos, gy, gs if use_s else None)  # fmt: skip
    for arg, leaf in leaves.items():
        got, want = leaf.grad, expected[arg]
        assert got is not None, f"{name}: no gradient for {arg}"
        assert got.shape == leaf.shape and got.dtype == leaf.dtype
        scale = max(want.abs().max().item(), 1e-6) if want.numel() else 1.0
        error = (got.double() - want).abs().max().item() / scale if want.numel() else 0.0
        assert error <= TOLERANCE[dtype], (
            f"{name} {dtype} ({params} params) width {width} rows {rows} {layout} {norm_pos}: d{arg} is off by "
            f"{error:.3g} of its largest value (tolerance {TOLERANCE[dtype]})"
        )
    if spec.has_residual:
        # both inputs get the gradient of s
        torch.testing.assert_close(leaves["x"].grad, leaves["residual"].grad, rtol=0, atol=0)


def _multi_width(name) -> int:
    """A width of the op's backward multi-pass kernel on the target the interpreter runs, at every row
    count (from its table)."""
    import importlib

    table = importlib.import_module(f"generated.{name}_{runtime.INTERPRET_TARGET}").BACKWARD_TABLE
    return min(e.cols_lo for e in table.entries if e.passes == "multi" and e.rows_lo == 1) + 7


def _modes(name):
    return modes(SPECS[name])


def _cpu_cases():
    cases = []
    for name in DIFFERENTIABLE:
        for dtype, mode in itertools.product(("fp32", "bf16"), _modes(name)):
            cases.append((name, dtype, 111, 5, "2d", mode))
        mode = _modes(name)[-1]
        cases += [(name, "fp16", 64, 4, "3d", mode), (name, "fp32", 96, 3, "strided", _modes(name)[0])]
        cases += [(name, "fp32", _multi_width(name), 3, "2d", mode), (name, "bf16", 128, 0, "2d", _modes(name)[0])]
        # cuda, below 512 rows: the split grid (its column programs write dw and db), one row; 37 rows
        # of 1000: several row tiles and column programs, the last ones ragged; from 512 rows the
        # persistent grid, whose programs' partial sums are added up (in a loop of one stage, and of
        # three at bf16 520×200, where pre mode loads ds late)
        cases += [(name, "bf16", 111, 1, "2d", mode), (name, "bf16", 1000, 37, "2d", mode)]
        cases += [(name, "fp32", 40, 600, "2d", mode), (name, "bf16", 200, 520, "3d", _modes(name)[0])]
        # rows wider than 8192 in one tile read w per tile (cuda: the split grid); 130 rows: three of the
        # column programs' 64-row tiles there, walked last (ragged) to first
        cases += [(name, "fp32", 12000, 3, "2d", mode), (name, "bf16", 12000, 130, "2d", _modes(name)[0])]
        # from 256 rows of them the rms norms' persistent single pass, whose tiles add their share of dw
        # to the program's sums before the row's sums (EARLY_SUMS); the layer norms' from more rows
        # (test_layer_norms_wide_persistent_pass_cuda_kernels)
        if runtime.INTERPRET_TARGET == "cuda":  # (npu's tables have no such path)
            cases += [(name, "bf16", 8200, 256, "2d", m) for m in _modes(name) if not SPECS[name].is_layer]
    return cases


@pytest.mark.parametrize("name,dtype,width,rows,layout,mode", _cpu_cases())
def test_gradients_cpu(name, dtype, width, rows, layout, mode, cpu_path):
    if cpu_path == "reference" and width > 1000:
        pytest.skip("the reference has one path for every width")
    run_case(name, DTYPES[dtype], width, rows, layout, mode, "cpu")


def _fp32_weight_cases(gpu: bool):
    """Half x with fp32 weight and bias (mixed-precision training): dx in x's dtype, dw and db in fp32."""
    cases = []
    for name in DIFFERENTIABLE:
        for dtype, mode in itertools.product(("fp16", "bf16"), _modes(name)):
            widths = (111, 4097, 16384) if gpu else (111,)
            cases += [(name, dtype, width, 57 if gpu else 5, "2d", mode) for width in widths]
        if not gpu:
            cases.append((name, "bf16", _multi_width(name), 3, "3d", _modes(name)[-1]))
            cases.append((name, "fp16", 64, 0, "2d", _modes(name)[0]))
    return cases


@pytest.mark.parametrize("name,dtype,width,rows,layout,mode", _fp32_weight_cases(gpu=False))
def test_gradients_fp32_weight_cpu(name, dtype, width, rows, layout, mode, cpu_path):
    if cpu_path == "reference" and width > 1000:
        pytest.skip("the reference has one path for every width")
    run_case(name, DTYPES[dtype], width, rows, layout, mode, "cpu", params=torch.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("name,dtype,width,rows,layout,mode", _fp32_weight_cases(gpu=True))
def test_gradients_fp32_weight_gpu(name, dtype, width, rows, layout, mode):
    run_case(name, DTYPES[dtype], width, rows, layout, mode, "cuda", params=torch.float32)


def _without_s_cases():
    """Every residual op at 3×111 in fp32; cuda's rms norms also at 256×8200 in bf16, their persistent
    single pass of wide rows (EARLY_SUMS; the layer norms take the split grid there, as at 111)."""
    residual = [n for n in DIFFERENTIABLE if SPECS[n].has_residual]
    cases = [(name, torch.float32, 111, 3) for name in residual]
    if runtime.INTERPRET_TARGET == "cuda":  # (npu's tables have no such path)
        cases += [(name, torch.bfloat16, 8200, 256) for name in residual if not SPECS[name].is_layer]
    return cases


@pytest.mark.parametrize("name,dtype,width,rows", _without_s_cases())
def test_gradient_without_s_interpreter(name, dtype, width, rows, cpu_path):
    """Pre mode with s unused: the backward gets no ds (HAS_DS off)."""
    if cpu_path == "reference" and width > 1000:
        pytest.skip("the reference has one path for every width")
    run_case(name, dtype, width, rows, "2d", "pre", "cpu", use_s=False)


def _s_alone(name, device):
    """Pre mode with y unused (the loss reads s only): the gradient of s goes to x and the residual as it
    is, and the weight and bias get none (None, as torch autograd of the formula gives them: an optimizer
    then skips them, where a zero gradient would still decay them)."""
    spec = SPECS[name]
    generator = torch.Generator().manual_seed(5)
    x, residual = (torch.randn(4, 96, generator=generator).to(device).requires_grad_() for _ in range(2))
    params = {"weight": torch.randn(96, generator=generator).to(device).requires_grad_()}
    if spec.has_bias:
        params["bias"] = torch.randn(96, generator=generator).to(device).requires_grad_()
    gs = torch.randn(4, 96, generator=generator).to(device)
    y, s = getattr(generated, name)(x, residual, norm_pos="pre", **params)
    (s * gs).sum().backward()
    expected = oracle(
        spec, x, residual, params["weight"], params.get("bias"), spec.eps, "pre", torch.zeros_like(gs), gs
    )
    for leaf in (x, residual):
        torch.testing.assert_close(leaf.grad, expected["x"].float(), rtol=0, atol=0)
    for param, leaf in params.items():
        assert expected[param].abs().max() == 0  # (the float64 formula gives zeros where it gives one)
        assert leaf.grad is None, f"{name}: {param} got a gradient {leaf.grad} though y is unused"


@pytest.mark.parametrize("name", [n for n in DIFFERENTIABLE if SPECS[n].has_residual])
def test_gradient_of_s_alone(name, cpu_path):
    _s_alone(name, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name", [n for n in DIFFERENTIABLE if SPECS[n].has_residual])
def test_gradient_of_s_alone_gpu(name):
    _s_alone(name, "cuda")


class _MostRows:
    """A dispatch table that gives every call the entry of its width's most rows."""

    def __init__(self, table):
        self.table = table

    def lookup(self, dtype, n_rows, n_cols):
        return self.table.lookup(dtype, None, n_cols)


_LAYER_WIDE = [(n, m, s) for n in DIFFERENTIABLE if SPECS[n].is_layer for m in _modes(n) for s in (True, False)]


@pytest.mark.parametrize("name,mode,use_s", [c for c in _LAYER_WIDE if c[1] == "pre" or c[2]])
def test_layer_norms_wide_persistent_pass_cuda_kernels(name, mode, use_s, monkeypatch):
    """cuda's layer norms at 8193-16383 columns take the persistent single pass (one 16384-wide tile a
    row, dw's and db's sums before the row's sums: EARLY_SUMS, the column mask on) from 1024-8192 rows
    (test_runtime.py checks where); in Triton's interpreter, 64 rows of 8200 columns launched with that
    entry (the one of the width's most rows), whose gradients must hold, in pre mode with and without
    ds (the same rows without the table's change take the split grid)."""
    if not runtime.INTERPRET or runtime.INTERPRET_TARGET != "cuda":  # (not in the npu checks: not selected)
        pytest.skip("needs TRITON_INTERPRET=1 running the cuda kernels (npu's tables have no such path)")
    launcher = importlib.import_module(f"generated.{name}_cuda").BACKWARD_LAUNCHER
    entry = launcher.table.lookup("bf16", None, 8200)
    assert (entry.grid, entry.passes, entry.block_n, entry.block_m) == ("persistent", "single", 16384, 1)
    monkeypatch.setattr(launcher, "table", _MostRows(launcher.table))
    monkeypatch.setattr(launcher, "slow", {})
    run_case(name, torch.bfloat16, 8200, 64, "2d", mode, "cpu", use_s=use_s)
    assert any(options["SPLIT_N"] == 0 and grid[0] < 64 for _, grid, options in launcher.slow.values())


@pytest.mark.parametrize("name", [n for n in DIFFERENTIABLE if SPECS[n].has_bias])
def test_gradient_without_bias(name, cpu_path):
    run_case(name, torch.float32, 111, 3, "2d", _modes(name)[0], "cpu", with_bias=False)


def _gpu_cases():
    cases = []
    for name in DIFFERENTIABLE:
        for dtype, mode, width in itertools.product(
            ("fp32", "fp16", "bf16"), _modes(name), (111, 4097, 7338, 16384, 20000)
        ):
            cases.append((name, dtype, width, 57, "2d", mode))
        for layout, rows in (("3d", 57), ("strided", 19), ("2d", 0), ("2d", 1), ("2d", 4096)):
            cases.append((name, "bf16", 4097, rows, layout, _modes(name)[0]))
        # 8193-16384 columns: the rms norms' persistent single pass; layer norms' split grid, 16 warps
        # from 1024 rows, at 16384 columns and below the persistent rows of fewer (layernorm bf16 1024,
        # fp32 2048, fp16 8192; add_layernorm bf16 and fp32 4096, fp16 8192), their persistent single
        # pass from there (the column mask on); at exactly 16384 columns layernorm's persistent pass with
        # int32 row offsets (SMALL_OFFSETS) from 1024 rows in bf16 (the 4096 rows below) and 2048 in fp16
        cases += [
            (name, "fp16", 16384, 2048, "2d", _modes(name)[-1]),
            (name, "bf16", 12288, 2048, "2d", _modes(name)[0]),
            (name, "fp16", 10000, 8192, "2d", _modes(name)[-1]),
            (name, "bf16", 16384, 4096, "2d", _modes(name)[-1]),
            (name, "bf16", 12000, 4096, "2d", _modes(name)[0]),
            (name, "fp32", 9000, 4096, "2d", _modes(name)[-1]),
        ]
    return cases


@pytest.mark.gpu
@pytest.mark.parametrize("name,dtype,width,rows,layout,mode", _gpu_cases())
def test_gradients_gpu(name, dtype, width, rows, layout, mode):
    run_case(name, DTYPES[dtype], width, rows, layout, mode, "cuda")


# ----------------------------------------------------------------------------
# Refusals


def test_inplace_with_grad_is_refused():
    x = torch.randn(3, 64, requires_grad=True)
    with pytest.raises(NormgenError, match="add_rmsnorm: inplace=True cannot be differentiated: x requires grad"):
        generated.add_rmsnorm(x, torch.randn(3, 64), torch.ones(64), inplace=True)


def test_double_backward_is_refused(cpu_path):
    x = torch.randn(3, 64, requires_grad=True)
    w = torch.ones(64, requires_grad=True)
    y = generated.rmsnorm(x, w)
    # a graph of the gradient would be wrong (the backward kernels record nothing): refused when asked for
    with pytest.raises(NormgenError, match="rmsnorm: double backward"):
        torch.autograd.grad(y.square().sum(), x, create_graph=True)
    # the incoming gradient needs no gradient of its own (y.sum()), but create_graph=True asks for one
    with pytest.raises(NormgenError, match="rmsnorm: double backward"):
        torch.autograd.grad(generated.rmsnorm(x, w).sum(), x, create_graph=True)
    for mode in ("pre", "post"):
        r = torch.randn(3, 64, requires_grad=True)
        with pytest.raises(NormgenError, match="add_rmsnorm: double backward"):
            torch.autograd.grad(generated.add_rmsnorm(x, r, w, norm_pos=mode)[0].sum(), r, create_graph=True)
    (gx,) = torch.autograd.grad(generated.rmsnorm(x, w).square().sum(), x)
    assert not gx.requires_grad


def test_statistics_are_not_differentiable(cpu_path):
    x = torch.randn(3, 64, requires_grad=True)
    y, mean, rstd = generated.layernorm(x, torch.ones(64), return_mean=True, return_rstd=True)
    assert y.requires_grad and not mean.requires_grad and not rstd.requires_grad


def test_direct_custom_op_call_without_statistics_is_refused():
    x = torch.randn(3, 64, requires_grad=True)
    y = torch.ops.normgen.rmsnorm(x, torch.ones(64), 1e-6, False)[0]
    with pytest.raises(NormgenError, match="return_rstd=True"):
        y.sum().backward()


@pytest.mark.parametrize("name", ["rmsnorm", "add_rmsnorm", "layernorm"])
def test_expanded_and_strided_gradients(name, cpu_path):
    """autograd may hand the backward an expanded gradient (y.sum().backward(): stride 0) or a strided
    one (a transposed use of y): the op copies it into rows; its gradients match a contiguous dy's."""
    spec = SPECS[name]
    x = torch.randn(6, 64, requires_grad=True)
    args = [x] + ([torch.randn(6, 64)] if spec.has_residual else []) + [torch.randn(64)]
    out = getattr(generated, name)(*args)
    y = out[0] if spec.has_residual else out
    y.sum().backward()  # dy = ones, expanded
    expanded = x.grad.clone()
    x.grad = None
    out = getattr(generated, name)(*args)
    y = out[0] if spec.has_residual else out
    y.backward(torch.ones(64, 6).t())  # the same values, column-major
    torch.testing.assert_close(x.grad, expanded, rtol=1e-5, atol=1e-6)
    x.grad = None
    out = getattr(generated, name)(*args)
    y = out[0] if spec.has_residual else out
    y.backward(torch.ones(6, 64))
    torch.testing.assert_close(x.grad, expanded, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "params,programs,cols", [(1, 1, 7), (2, 65, 33), (1, 130, 64), (2, 3, 100), (1, 600, 20), (2, 9, 8200)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sum_partials(params, programs, cols, dtype):
    """The cuda backward's sum of the programs' partial dw/db rows (dsl/device.py sum_partials):
    every program's row and every column counted once, then one rounding to the gradient's dtype.
    Integer-valued partials make the fp32 sum exact, so the check is equality."""
    from .conftest import HAS_GPU

    if not (HAS_GPU or runtime.INTERPRET and runtime.INTERPRET_TARGET == "cuda"):
        pytest.skip("runs the cuda kernel: on the GPU or in upstream Triton's interpreter")
    generator = torch.Generator().manual_seed(programs * cols)
    partials = torch.randint(-3000, 3000, (params, programs, cols), generator=generator).float()
    partials = partials.to("cuda" if HAS_GPU else "cpu")
    got = runtime.sum_partials(partials, dtype)
    assert got.shape == (params, cols) and got.dtype == dtype
    # the interpreter's fp32 -> bf16 conversion may differ from the hardware's rounding by one ulp
    ulp = 2.0**-7 if dtype == torch.bfloat16 and not HAS_GPU else 0.0
    torch.testing.assert_close(got, partials.double().sum(1).to(dtype), rtol=ulp, atol=0)


@pytest.mark.parametrize("name", ["rmsnorm", "layernorm"])
def test_backward_op_returns_parameter_gradients_in_the_weights_dtype(name, cpu_path):
    """The backward custom op itself (which autograd would silently cast) and its fake: dx in x's
    dtype, the dw and db rows in the weight's (fp32 here, with bf16 x; x's where they match)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    spec = SPECS[name]
    for params in (torch.float32, torch.bfloat16):
        x = torch.randn(5, 96).to(torch.bfloat16)
        weight, bias = torch.randn(96, dtype=params), torch.randn(96, dtype=params)
        stats = generated.layernorm(x, weight, bias, return_mean=True, return_rstd=True)[1:] if spec.is_layer else (
            None, generated.rmsnorm(x, weight, return_rstd=True)[1])  # fmt: skip
        args = (torch.randn_like(x), None, x, None, weight, *stats, spec.eps, spec.has_bias, None)
        backward = getattr(torch.ops.normgen, f"{name}_backward")
        dx, sums = backward(*args)
        assert (dx.dtype, sums.dtype, sums.shape) == (x.dtype, params, (1 + spec.has_bias, 96))
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = backward(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
        assert [t.dtype for t in fake] == [dx.dtype, sums.dtype]


@pytest.mark.parametrize("name", DIFFERENTIABLE)
# cuda: the split grid below 512 rows (one, then three of its column programs' 128-row tiles), the
# persistent one from there
@pytest.mark.parametrize("rows", [37, 300, 520])
def test_parameter_gradients_match_the_reference_formula_tightly(name, rows, monkeypatch):
    """dw and db in fp32 (fp16 x: the interpreter rounds fp32 to bf16 otherwise than the GPU) from
    the kernels in the interpreter against torch autograd of the generated reference on the same
    inputs: one formula, summed in another order (an fp16 rounding of x_hat may come out one ulp
    apart: up to 3.2e-5 of the largest value here), so within 1e-4. Tighter than the float64
    oracle's tolerance, it sees a rounding step of the formula left out (llama casting's x_hat,
    rounded before dw: 1.7e-4 to 2.5e-4 here) on either grid."""
    if not runtime.INTERPRET:
        pytest.skip("needs TRITON_INTERPRET=1 (the CPU interpreter)")
    spec = SPECS[name]
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 128, generator=generator).to(torch.float16)
    args = [x] + [torch.randn(rows, 128, generator=generator).to(torch.float16)] * spec.has_residual
    args += [1.0 - spec.weight.offset + 0.5 * torch.randn(128, generator=generator)] * spec.has_weight
    args += [0.1 * torch.randn(128, generator=generator)] * spec.has_bias
    dy = torch.randn(rows, 128, generator=generator).to(torch.float16)
    grads = []
    for interpret in (True, False):
        monkeypatch.setattr(runtime, "INTERPRET", interpret)
        leaves = [a.detach().requires_grad_() for a in args]
        out = getattr(generated, name)(*leaves)
        (out[0] if spec.has_residual else out).backward(dy)
        grads.append([leaf.grad for leaf in leaves[1 + spec.has_residual :]])
    for got, want in zip(*grads, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * want.abs().max().item())
