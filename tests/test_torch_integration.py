"""The ops as PyTorch citizens: custom ops, torch.compile, CUDA graphs, modules, in place.

CPU tests run the kernels in the interpreter (TRITON_INTERPRET=1, see conftest)
or the reference; `gpu` tests run on CUDA.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import generated
from dsl import runtime

from .cases import SPECS, call, make_inputs

RESIDUAL_SPECS = sorted(name for name, spec in SPECS.items() if spec.has_residual)


def custom_op_args(spec, inputs, norm_pos):
    """Positional arguments of the custom op: tensors, eps, then the per-call switches."""
    args = [inputs["x"]]
    args += [inputs["residual"]] if spec.has_residual else []
    args += [inputs["weight"]] if spec.has_weight else []
    args += [inputs.get("bias")] if spec.has_bias else []
    args.append(spec.eps)
    args += [norm_pos] if spec.has_residual else []
    args += [True] if spec.stores_mean else []
    args += [True] if spec.stores_rstd else []
    return tuple(args)


def op_cases():
    for name, spec in sorted(SPECS.items()):
        for mode in [m.value for m in spec.residual] or [None]:
            yield pytest.param(name, mode, id=f"{name}-{mode or 'plain'}")


@pytest.mark.parametrize("name, mode", list(op_cases()))
def test_opcheck(name, mode):
    """torch.library.opcheck: schema, fake (meta) implementation, dispatch."""
    spec = SPECS[name]
    inputs = make_inputs(spec, 5, 64, torch.float32, "cpu", "2d")
    args = custom_op_args(spec, inputs, mode)
    op = getattr(torch.ops.normgen, name)
    torch.library.opcheck(op.default, args)
    if spec.has_residual:
        # NAME_inplace (any mode) and NAME_inplace_MODE, whose schema marks only what the mode writes
        # (opcheck's schema check fails an input written but not marked)
        for inplace in (f"{name}_inplace", f"{name}_inplace_{mode}"):
            torch.library.opcheck(getattr(torch.ops.normgen, inplace).default, inplace_op_args(spec, inputs, mode))


def inplace_op_args(spec, inputs, norm_pos):
    """The in-place custom op's arguments: inputs, eps, norm_pos, then the outputs it fills."""
    x = inputs["x"].clone()
    args = [x, inputs["residual"].clone()]
    args += [inputs["weight"]] if spec.has_weight else []
    args += [inputs.get("bias")] if spec.has_bias else []
    args += [spec.eps, norm_pos]
    stats_dtype = x.dtype if spec.casting.value == "none" else torch.float32
    if spec.is_quantized:
        storage = torch.int8 if spec.quantize.value == "int8" else torch.uint8
        args += [torch.empty_like(x, dtype=storage), torch.empty(x.shape[:-1] + (1,), device=x.device)]
    args += [torch.empty(x.shape[:-1], dtype=stats_dtype, device=x.device)] if spec.stores_mean else []
    args += [torch.empty(x.shape[:-1], dtype=stats_dtype, device=x.device)] if spec.stores_rstd else []
    return tuple(args)


@pytest.mark.parametrize("name, mode", list(op_cases()))
def test_fake_outputs_match_real(name, mode):
    """The fake implementation gives the real outputs' shapes, dtypes and strides."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    spec = SPECS[name]
    inputs = make_inputs(spec, 6, 48, torch.bfloat16, "cpu", "strided")
    args = custom_op_args(spec, inputs, mode)
    op = getattr(torch.ops.normgen, name).default
    real = op(*args)
    with FakeTensorMode(allow_non_fake_inputs=True) as fake_mode:
        fake_args = tuple(fake_mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
        fake = op(*fake_args)
    assert [(t.shape, t.dtype, t.stride()) for t in fake] == [(t.shape, t.dtype, t.stride()) for t in real]


class Block(torch.nn.Module):
    """A small pre-norm transformer block using normgen's modules (as model code would)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm1 = generated.AddRMSNorm(hidden, norm_pos="pre")
        self.attn = torch.nn.Linear(hidden, hidden)
        self.norm2 = generated.AddLayerNorm(hidden, norm_pos="pre")
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(hidden, 4 * hidden), torch.nn.GELU(), torch.nn.Linear(4 * hidden, hidden)
        )
        self.final = generated.RMSNorm(hidden)

    def forward(self, x, residual):
        h, residual = self.norm1(x, residual)
        h = self.attn(h)
        h, residual = self.norm2(h, residual)
        h = self.mlp(h)
        return self.final(h + residual)


def _block_inputs(device, dtype):
    torch.manual_seed(0)
    block = Block(64).to(device=device, dtype=dtype)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 7, 64, device=device, dtype=dtype)
    residual = torch.randn_like(x)
    return block, x, residual


def _compile_and_compare(device, dtype, backend, tol):
    block, x, residual = _block_inputs(device, dtype)
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    with torch.no_grad():
        expected = block(x, residual)
        actual = compiled(x, residual)
        again = compiled(x + 1, residual)
        expected_again = block(x + 1, residual)
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)
    torch.testing.assert_close(again, expected_again, rtol=tol, atol=tol)


def test_compile_fullgraph_cpu():
    """torch.compile(fullgraph=True) traces the block without graph breaks and matches eager."""
    _compile_and_compare("cpu", torch.float32, "inductor", 1e-5)


def test_compile_graph_records_custom_ops():
    """Dynamo records normgen's custom ops as single nodes, not their Python bodies."""
    block, x, residual = _block_inputs("cpu", torch.float32)
    seen = []

    def backend(graph_module, example_inputs):
        seen.extend(str(node.target) for node in graph_module.graph.nodes if node.op == "call_function")
        return graph_module.forward

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(block, fullgraph=True, backend=backend)(x, residual)
    assert {"normgen.add_rmsnorm", "normgen.add_layernorm", "normgen.rmsnorm"} <= set(seen)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compile_fullgraph_gpu(dtype):
    _compile_and_compare("cuda", dtype, "inductor", 1e-5 if dtype is torch.float32 else 2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("name, mode", list(op_cases()))
def test_cuda_graph_replay(name, mode):
    """Capture every op in a CUDA graph; replays on new inputs match eager calls."""
    spec = SPECS[name]
    inputs = make_inputs(spec, 37, 1000, torch.bfloat16, "cuda", "2d")
    static = {k: v.clone() for k, v in inputs.items()}
    call(spec, static, mode)  # warm up: compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = call(spec, static, mode)
    for seed in (1, 2):
        fresh = make_inputs(spec, 37, 1000, torch.bfloat16, "cuda", "2d", seed=seed)
        for key in ("x", "residual"):
            if key in fresh:
                static[key].copy_(fresh[key])
        graph.replay()
        torch.cuda.synchronize()
        expected = call(spec, {**static}, mode)
        for key, value in expected.items():
            assert torch.equal(captured[key].view(torch.uint8), value.view(torch.uint8)), f"{name} {mode}: {key}"


# ----------------------------------------------------------------------------
# Modules


class HFStyleRMSNorm(torch.nn.Module):
    """The shape of a Hugging Face RMSNorm (LlamaRMSNorm): a `weight` parameter."""

    def __init__(self, hidden, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden))
        self.variance_epsilon = eps

    def forward(self, x):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(variance + self.variance_epsilon)).to(x.dtype)


def test_module_loads_hugging_face_names():
    torch.manual_seed(0)
    hf = HFStyleRMSNorm(96)
    with torch.no_grad():
        hf.weight.normal_()
    ours = generated.RMSNorm(96)
    ours.load_state_dict(hf.state_dict(), strict=True)
    x = torch.randn(3, 96)
    with torch.no_grad():  # the modules' parameters require grad; normgen has no backward yet
        torch.testing.assert_close(ours(x), hf(x), rtol=1e-5, atol=1e-5)

    ln = torch.nn.LayerNorm(96)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    ours_ln = generated.LayerNorm(96)
    ours_ln.load_state_dict(ln.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(ours_ln(x), ln(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_module_state_dict_round_trip(name):
    spec = SPECS[name]
    cls = getattr(generated, generated_class(name))
    kwargs = {"norm_pos": spec.residual[-1].value} if spec.has_residual else {}
    module = cls(80, eps=1e-5, **kwargs)
    state = module.state_dict()
    expected_keys = {"weight"} if spec.has_weight else set()
    expected_keys |= {"bias"} if spec.has_bias else set()
    assert set(state) == expected_keys
    if spec.has_weight:
        # The effective scale (weight + offset) starts at one.
        assert torch.all(module.weight + spec.weight.offset == 1.0)
        with torch.no_grad():
            module.weight.normal_()
    clone = cls(80, eps=1e-5, **kwargs)
    clone.load_state_dict(module.state_dict())
    inputs = make_inputs(spec, 4, 80, torch.float32, "cpu", "2d")
    args = [inputs["x"]] + ([inputs["residual"]] if spec.has_residual else [])
    with torch.no_grad():
        a, b = module(*args), clone(*args)
    for left, right in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
        assert torch.equal(left, right)
    text = repr(module)
    assert "80" in text and "eps=1e-05" in text
    if spec.has_residual:
        assert repr(kwargs["norm_pos"]) in text
    module.reset_parameters()
    if spec.has_weight:
        assert torch.all(module.weight + spec.weight.offset == 1.0)


def generated_class(name):
    from dsl.names import module_class

    return module_class(SPECS[name])


def test_module_rejects_bad_norm_pos():
    with pytest.raises(runtime.NormgenError, match="norm_pos must be one of 'pre', 'post'"):
        generated.AddRMSNorm(16, norm_pos="middle")


# ----------------------------------------------------------------------------
# In place


@pytest.mark.parametrize("name", RESIDUAL_SPECS)
@pytest.mark.parametrize("mode", ["pre", "post"])
@pytest.mark.parametrize("layout", ["2d", "strided"])
def test_inplace_writes_into_inputs(name, mode, layout):
    spec = SPECS[name]
    inputs = make_inputs(spec, 9, 100, torch.float32, "cpu", layout)
    expected = call(spec, {k: v.clone() for k, v in inputs.items()}, mode, stats=False)
    x, residual = inputs["x"], inputs["residual"]
    x_ptr, residual_ptr = x.data_ptr(), residual.data_ptr()
    result = call(spec, inputs, mode, stats=False, inplace=True)
    assert x.data_ptr() == x_ptr and residual.data_ptr() == residual_ptr
    if spec.is_quantized:
        assert result["residual_out"] is (residual if mode == "pre" else x)
        torch.testing.assert_close(result["residual_out"], expected["residual_out"], rtol=0, atol=0)
        assert torch.equal(result["q"].view(torch.uint8), expected["q"].view(torch.uint8))
        torch.testing.assert_close(result["scale"], expected["scale"], rtol=0, atol=0)
    else:
        assert result["y"] is x
        torch.testing.assert_close(x, expected["y"], rtol=0, atol=0)
        if mode == "pre":
            assert result["residual_out"] is residual
            torch.testing.assert_close(residual, expected["residual_out"], rtol=0, atol=0)
        else:
            assert result["residual_out"] is x


def test_inplace_multi_pass_reads_before_it_writes():
    """Wide rows take the multi-pass kernel: in place it must still see the original inputs."""
    spec = SPECS["add_rmsnorm"]
    inputs = make_inputs(spec, 3, 40000, torch.float32, "cpu", "2d")
    expected = call(spec, {k: v.clone() for k, v in inputs.items()}, "pre", stats=False)
    result = call(spec, inputs, "pre", stats=False, inplace=True)
    torch.testing.assert_close(result["y"], expected["y"], rtol=0, atol=0)
    torch.testing.assert_close(result["residual_out"], expected["residual_out"], rtol=0, atol=0)


def test_inplace_rejects_what_cannot_be_written():
    spec = SPECS["add_rmsnorm"]
    w = torch.ones(64)
    x = torch.randn(4, 64)
    with pytest.raises(runtime.NormgenError, match="must not overlap|in separate memory"):
        generated.add_rmsnorm(x, x, w, inplace=True)
    base = torch.randn(4, 128)
    with pytest.raises(runtime.NormgenError, match="separate memory"):
        generated.add_rmsnorm(base[:, :64], base[:, 32:96], w, inplace=True)
    with pytest.raises(runtime.NormgenError, match="overlap"):
        generated.add_rmsnorm(torch.randn(1, 64).expand(4, 64), torch.randn(4, 64), w, inplace=True)
    with pytest.raises(runtime.NormgenError, match="collapse into one row stride"):
        t = torch.randn(4, 6, 64).transpose(0, 1)
        generated.add_rmsnorm(t, torch.randn(6, 4, 64), w, inplace=True)
    leaf = torch.randn(4, 64, requires_grad=True)
    with pytest.raises(runtime.NormgenError, match="requires grad"):
        generated.add_rmsnorm(leaf, torch.randn(4, 64), w, inplace=True)
    assert spec.has_residual


def test_inplace_refuses_parameters_in_written_memory():
    """A weight or bias inside x or residual would be read by later rows after earlier ones wrote it
    (the kernels gave wrong rows): refused, naming the parameter; one beside them is taken."""
    x, r = torch.randn(64, 16), torch.randn(64, 16)
    with pytest.raises(runtime.NormgenError, match="writes into x, and the weight shares its memory"):
        generated.add_rmsnorm(x, r, x[0], inplace=True)
    with pytest.raises(runtime.NormgenError, match="writes into residual, and the weight shares its memory"):
        generated.add_rmsnorm(x, r, r[5], inplace=True)
    with pytest.raises(runtime.NormgenError, match="writes into x, and the bias shares its memory"):
        generated.add_layernorm(x, r, torch.ones(16), x[63], inplace=True)
    base = torch.randn(9, 16)
    w = base[8].clone()
    expected = generated.add_rmsnorm(base[:4].clone(), base[4:8].clone(), w)
    y, s = generated.add_rmsnorm(base[:4], base[4:8], base[8], inplace=True)  # the weight beside them
    assert torch.equal(y, expected[0]) and torch.equal(s, expected[1])


def test_inplace_takes_interleaved_halves_of_one_buffer():
    """x and residual as the two halves of each row of one buffer share no element: taken, as written."""
    buf = torch.randn(3, 32)
    x, r = buf[:, :16], buf[:, 16:]
    w = torch.rand(16) + 0.5
    expected = generated.add_rmsnorm(x.clone(), r.clone(), w)
    y, s = generated.add_rmsnorm(x, r, w, inplace=True)
    assert y is x and s is r
    assert torch.equal(buf[:, :16], expected[0]) and torch.equal(buf[:, 16:], expected[1])
    with pytest.raises(runtime.NormgenError, match="separate memory"):
        generated.add_rmsnorm(buf[:, :16], buf[:, 15:31], w, inplace=True)  # one column shared


def test_the_inplace_ops_check_the_buffers_they_write():
    """torch.ops.normgen.NAME_inplace writes q, scale, mean and rstd into the tensors it is given, whole:
    a short, strided, mistyped or overlapping one is refused (a short rstd was written past its end)."""
    x, r, w = torch.randn(4, 16), torch.randn(4, 16), torch.ones(16)
    buf = torch.full((8,), -7.0)
    with pytest.raises(runtime.NormgenError, match=r"rstd \(shape \(2,\).*must be a contiguous tensor of shape \(4,\)"):
        torch.ops.normgen.add_rmsnorm_inplace(x, r, w, 1e-6, "pre", buf[:2])
    assert torch.equal(buf, torch.full((8,), -7.0))
    with pytest.raises(runtime.NormgenError, match="rstd .* dtype torch.float32"):
        torch.ops.normgen.add_rmsnorm_inplace(x, r, w, 1e-6, "pre", torch.zeros(4, dtype=torch.int32))
    with pytest.raises(runtime.NormgenError, match="rstd .*not contiguous"):
        torch.ops.normgen.add_rmsnorm_inplace(x, r, w, 1e-6, "pre", torch.zeros(8)[::2])
    with pytest.raises(runtime.NormgenError, match="rstd shares memory with x"):
        torch.ops.normgen.add_rmsnorm_inplace(x, r, w, 1e-6, "pre", x.view(-1)[:4])
    q, scale = torch.zeros(4, 16, dtype=torch.int8), torch.zeros(4, 1)
    with pytest.raises(runtime.NormgenError, match="q .* dtype torch.int8"):
        torch.ops.normgen.add_rmsnorm_int8_inplace(x, r, w, 1e-6, "pre", q.float(), scale)
    with pytest.raises(runtime.NormgenError, match=r"scale .*shape \(4, 1\)"):
        torch.ops.normgen.add_rmsnorm_int8_inplace(x, r, w, 1e-6, "pre", q, torch.zeros(2, 1))
    with pytest.raises(runtime.NormgenError, match=r"q .*shape \(4, 16\), dtype torch.uint8"):
        torch.ops.normgen.add_rmsnorm_fp8_inplace(x, r, w, 1e-6, "pre", q.view(torch.float8_e4m3fn), scale)
    mean, rstd = torch.empty(4), torch.empty(4)
    torch.ops.normgen.add_layernorm_inplace(x, r, w, None, 1e-6, "pre", mean, rstd)  # as allocated: taken
    expected = generated.add_layernorm(x.clone(), r.clone(), w, None, 1e-6, return_mean=True, return_rstd=True)
    assert torch.isfinite(mean).all() and torch.isfinite(rstd).all() and expected is not None


def test_the_backward_op_checks_its_arguments():
    """torch.ops.normgen.NAME_backward, called directly: a short rstd was read past its end (dx rows of
    1e18); every argument is checked before anything runs, and autograd's arguments pass."""
    x, w, dy = torch.randn(4, 16), torch.rand(16) + 0.5, torch.randn(4, 16)
    y, rstd = generated.rmsnorm(x, w, return_rstd=True)
    backward = torch.ops.normgen.rmsnorm_backward
    dx, dw = backward(dy, None, x, None, w, None, rstd, 1e-6, False, None)
    with pytest.raises(runtime.NormgenError, match="rstd .*must be a contiguous tensor of shape \\(4,\\)"):
        backward(dy, None, x, None, w, None, torch.full((8,), 1e6)[:2], 1e-6, False, None)
    with pytest.raises(runtime.NormgenError, match="grad_out .* must match x"):
        backward(dy[:3], None, x, None, w, None, rstd, 1e-6, False, None)
    with pytest.raises(runtime.NormgenError, match="weight"):
        backward(dy, None, x, None, torch.ones(15), None, rstd, 1e-6, False, None)
    with pytest.raises(runtime.NormgenError, match="takes no mean"):
        backward(dy, None, x, None, w, torch.zeros(4), rstd, 1e-6, False, None)
    with pytest.raises(runtime.NormgenError, match="bias_given"):
        backward(dy, None, x, None, w, None, rstd, 1e-6, True, None)
    add = torch.ops.normgen.add_layernorm_backward
    with pytest.raises(TypeError, match="residual must be a torch.Tensor"):
        add(dy, None, x, None, w, torch.zeros(4), rstd, 1e-6, False, "post")
    with pytest.raises(runtime.NormgenError, match="residual .* must match x"):
        add(dy, None, x, torch.randn(4, 15), w, torch.zeros(4), rstd, 1e-6, False, "post")
    with pytest.raises(TypeError, match="mean must be a torch.Tensor"):
        add(dy, None, x, None, w, None, rstd, 1e-6, False, "pre")
    with pytest.raises(runtime.NormgenError, match="mean .*shape \\(4,\\)"):
        add(dy, None, x, None, w, torch.zeros(3), rstd, 1e-6, False, "pre")
    with pytest.raises(runtime.NormgenError, match="only pre mode"):
        add(dy, dy, x, torch.randn(4, 16), w, torch.zeros(4), rstd, 1e-6, False, "post")
    # autograd's own call, with an expanded gradient (y.sum()), passes the checks
    xg = x.clone().requires_grad_()
    generated.rmsnorm(xg, w).sum().backward()
    torch.testing.assert_close(xg.grad, backward(torch.ones(4, 16), None, x, None, w, None, rstd, 1e-6, False, None)[0])
    assert dx.shape == x.shape and dw.shape == (1, 16)


@pytest.mark.gpu
@pytest.mark.parametrize("name", RESIDUAL_SPECS)
def test_inplace_gpu(name):
    spec = SPECS[name]
    inputs = make_inputs(spec, 33, 4096, torch.bfloat16, "cuda", "2d")
    expected = call(spec, {k: v.clone() for k, v in inputs.items()}, "pre", stats=False)
    result = call(spec, inputs, "pre", stats=False, inplace=True)
    assert result["residual_out"] is inputs["residual"]
    assert torch.equal(result["residual_out"], expected["residual_out"])
    key = "q" if spec.is_quantized else "y"
    assert torch.equal(result[key].view(torch.uint8), expected[key].view(torch.uint8))


def test_torch_func_transforms_are_refused_by_name():
    """vmap's batched tensors have no storage (the kernels read pointers) and functorch cannot run the
    ops' autograd formulas: both refused with the op's name instead of torch's errors from inside."""
    x, w = torch.randn(2, 4, 16), torch.rand(16) + 0.5
    with pytest.raises(runtime.NormgenError, match="rmsnorm: x is a tensor of a torch.func transform"):
        torch.func.vmap(lambda a: generated.rmsnorm(a, w))(x)
    with pytest.raises(runtime.NormgenError, match="rmsnorm: x is a tensor of a torch.func transform"):
        torch.func.grad(lambda a: generated.rmsnorm(a, w).sum())(x[0])
    with pytest.raises(runtime.NormgenError, match="add_rmsnorm: .* is a tensor of a torch.func transform"):
        torch.func.grad(lambda v: generated.add_rmsnorm(x[0], x[1], v)[0].sum())(w)
    module = generated.RMSNorm(16)
    with pytest.raises(runtime.NormgenError, match="rmsnorm: x is a tensor"):
        torch.func.vmap(module)(x)


def test_jit_trace_records_the_custom_op():
    """torch.jit.trace records dispatcher ops only: a call that launched its kernel directly would be
    missing from the trace (on cuda its outputs would come back unwritten; in the interpreter the trace
    failed). Traced calls take the custom op, which the graph holds and replays."""
    torch.manual_seed(0)
    norm, add = generated.RMSNorm(16).eval().requires_grad_(False), generated.AddRMSNorm(16).eval()
    add.requires_grad_(False)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(16) + 0.5)
    x, r = torch.randn(4, 16), torch.randn(4, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(norm, (x,))
        traced_add = torch.jit.trace(lambda a, b: add(a, b), (x, r))
    assert "normgen::rmsnorm" in str(traced.graph) and "normgen::add_rmsnorm" in str(traced_add.graph)
    x2, r2 = torch.randn(4, 16), torch.randn(4, 16)
    assert torch.equal(traced(x2), norm(x2))
    assert all(torch.equal(a, b) for a, b in zip(traced_add(x2, r2), add(x2, r2), strict=True))
