"""Training with normgen's modules: a small model, torch.compile, checkpointing, opcheck, CUDA graphs.

The model has a few blocks of residual adds, norms and linear layers. Built once
with normgen's modules and once with the same math written in torch ops, from
the same initial parameters, both train for a few SGD steps: the loss curves and
the parameter gradients must agree (fp32 to 1e-4 on CPU and GPU; bf16 on the
GPU within bf16 tolerance). CPU runs use the generated reference (the
interpreter's kernel gradients are checked in test_backward.py); GPU runs use
the Triton kernels.
"""

from __future__ import annotations

import pytest
import torch

import generated

pytestmark = pytest.mark.usefixtures("reference_path")  # CPU tensors run the generated reference (conftest.py)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


class TorchAddRMSNorm(torch.nn.Module):
    """add_rmsnorm's pre mode in torch ops (llama casting)."""

    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x, residual):
        s = x + residual
        s32 = s.float()
        x_hat = s32 * torch.rsqrt(s32.square().mean(-1, keepdim=True) + self.eps)
        return x_hat.to(s.dtype) * self.weight, s


class TorchLayerNorm(torch.nn.LayerNorm):
    pass


class Block(torch.nn.Module):
    def __init__(self, n, add_norm):
        super().__init__()
        self.norm = add_norm(n)
        self.linear = torch.nn.Linear(n, n)

    def forward(self, x, residual):
        y, residual = self.norm(x, residual)
        return torch.nn.functional.gelu(self.linear(y)), residual


class Model(torch.nn.Module):
    def __init__(self, n, normgen_modules: bool, blocks=3):
        super().__init__()
        add_norm = generated.AddRMSNorm if normgen_modules else TorchAddRMSNorm
        self.blocks = torch.nn.ModuleList(Block(n, add_norm) for _ in range(blocks))
        self.final = generated.LayerNorm(n) if normgen_modules else TorchLayerNorm(n)
        self.head = torch.nn.Linear(n, 1)

    def forward(self, x, checkpoint=False):
        h, residual = x, torch.zeros_like(x)
        for block in self.blocks:
            if checkpoint:
                h, residual = torch.utils.checkpoint.checkpoint(block, h, residual, use_reentrant=False)
            else:
                h, residual = block(h, residual)
        return self.head(self.final(h + residual)).square().mean()


def twin_models(n, dtype, device):
    torch.manual_seed(0)
    ours = Model(n, True).to(device=device, dtype=dtype)
    theirs = Model(n, False).to(device=device, dtype=dtype)
    with torch.no_grad():
        for p in ours.parameters():  # random norm weights too: ones would hide a wrong weight gradient
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 and p.numel() == n else 0.0))
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def train(model, data, steps=4, lr=0.05, **kwargs):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses, grads = [], []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = model(data[step], **kwargs)
        loss.backward()
        losses.append(loss.item())
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
        optimizer.step()
    return losses, grads


def assert_same_training(ours, theirs, rtol, atol):
    (losses, grads), (want_losses, want_grads) = ours, theirs
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(want_losses), rtol=rtol, atol=atol)
    for step, (got, want) in enumerate(zip(grads, want_grads, strict=True)):
        for name in want:
            scale = want[name].abs().max().clamp(min=1e-6)
            error = ((got[name].float() - want[name].float()).abs().max() / scale).item()
            assert error <= rtol * 10, f"step {step}, {name}: gradient off by {error:.3g} of its largest value"


def data_for(n, dtype, device, steps=4):
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(6, 5, n, generator=generator).to(device=device, dtype=dtype) for _ in range(steps)]


@pytest.mark.parametrize("device", DEVICES)
def test_small_model_trains_like_torch(device):
    ours, theirs = twin_models(64, torch.float32, device)
    data = data_for(64, torch.float32, device)
    assert_same_training(train(ours, data), train(theirs, data), rtol=1e-4, atol=1e-5)
    assert all(p.grad is not None for p in ours.parameters())


@pytest.mark.gpu
def test_small_model_trains_like_torch_bf16():
    """bf16: the first step's loss and gradients agree within bf16 tolerance (torch's bf16 autograd rounds
    every intermediate gradient, normgen's backward computes in fp32); later losses drift apart by the
    steps' rounding but follow the same curve."""
    ours, theirs = twin_models(256, torch.bfloat16, "cuda")
    data = data_for(256, torch.bfloat16, "cuda")
    # a small step: the loss of this random model grows without bound at lr 0.05 in bf16
    (losses, grads), (want_losses, want_grads) = train(ours, data, lr=1e-3), train(theirs, data, lr=1e-3)
    assert all(abs(v) < 1e6 for v in losses + want_losses), (losses, want_losses)
    assert abs(losses[0] - want_losses[0]) <= 1e-2 * abs(want_losses[0]), (losses, want_losses)
    for name, want in want_grads[0].items():
        error = ((grads[0][name].float() - want.float()).abs().max() / want.float().abs().max()).item()
        assert error <= 5e-2, f"{name}: gradient off by {error:.3g} of its largest value"
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(want_losses), rtol=0.1, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_checkpointing(device):
    ours, _ = twin_models(64, torch.float32, device)
    data = data_for(64, torch.float32, device, steps=1)
    _, plain = train(ours, data, steps=1, lr=0.0)
    _, checkpointed = train(ours, data, steps=1, lr=0.0, checkpoint=True)
    for name, want in plain[0].items():
        torch.testing.assert_close(checkpointed[0][name], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_training_fullgraph(device):
    """torch.compile(fullgraph=True) of the model's loss; backward() through the compiled graph, whose
    backward calls normgen's backward custom ops."""
    ours, _ = twin_models(64, torch.float32, device)
    data = data_for(64, torch.float32, device, steps=1)
    _, eager = train(ours, data, steps=1, lr=0.0)
    torch._dynamo.reset()
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    _, graphed = train(compiled, data, steps=1, lr=0.0)
    for name, want in eager[0].items():
        torch.testing.assert_close(graphed[0][f"_orig_mod.{name}"], want, rtol=1e-4, atol=1e-5)


def _rand(*shape, dtype=torch.float32):
    return lambda d: torch.randn(*shape, device=d).to(dtype)


_BF16 = torch.bfloat16  # with fp32 weights and biases: mixed precision


OPCHECK = [
    ("rmsnorm", (_rand(3, 64), _rand(64), 1e-6, True)),
    ("add_rmsnorm", (_rand(3, 64), _rand(3, 64), _rand(64), 1e-6, "pre", True)),
    ("add_rmsnorm", (_rand(3, 64), _rand(3, 64), _rand(64), 1e-6, "post", True)),
    ("layernorm", (_rand(3, 64), _rand(64), _rand(64), 1e-5, True, True)),
    ("add_rmsnorm", (_rand(3, 64, dtype=_BF16), _rand(3, 64, dtype=_BF16), _rand(64), 1e-6, "pre", True)),
    (
        "add_layernorm",
        (_rand(3, 64, dtype=_BF16), _rand(3, 64, dtype=_BF16), _rand(64), _rand(64), 1e-5, "post", True, True),
    ),
    ("gemma_rmsnorm", (_rand(3, 64, dtype=torch.float16), _rand(64), 1e-6, True)),
]


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_mixed_precision_module(device):
    """A module of fp32 parameters on bf16 activations under torch.compile(fullgraph=True): bf16 out, fp32
    parameter gradients, as eagerly (the backward custom op's fake gives dw and db the weight's dtype).

    dw and db are sums over rows in fp32, which a compiled backward may add up in another order (and a
    compiled forward may round y, whose gradient dy is, one bf16 ulp apart): each run's are checked
    against float64 sums of that run's own dy and s, within fp32's rounding of those sums."""
    module = generated.AddLayerNorm(64, bias=True, device=device)
    with torch.no_grad():
        module.weight.normal_()
        module.bias.normal_()
    x, residual = (torch.randn(6, 64, device=device).to(torch.bfloat16).requires_grad_() for _ in range(2))
    results = []
    for run in (module, torch.compile(module, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")):
        torch._dynamo.reset()
        y, s = run(x, residual)
        (y.float().square().sum() + s.float().sum()).backward()
        results.append((y, x.grad, module.weight.grad, module.bias.grad))
        x.grad = residual.grad = module.weight.grad = module.bias.grad = None
        # float64 sums of this run's dy (the bf16 gradient reaching y) and x_hat (from its bf16 s)
        dy = (2 * y.detach().float()).to(torch.bfloat16).double()
        s64 = s.detach().double()
        x_hat = (s64 - s64.mean(-1, keepdim=True)) * torch.rsqrt(s64.var(-1, unbiased=False, keepdim=True) + module.eps)
        for got, terms in ((results[-1][2], dy * x_hat), (results[-1][3], dy)):
            bound = 1e-5 * terms.abs().sum(0) + 1e-6  # fp32 rounding of a sum of 6 terms, with room
            assert ((got.double() - terms.sum(0)).abs() <= bound).all(), (got.double() - terms.sum(0)).abs().max()
    (y, dx, dw, db), (y_c, dx_c, dw_c, db_c) = results
    assert (y_c.dtype, dx_c.dtype, dw_c.dtype, db_c.dtype) == (torch.bfloat16,) * 2 + (torch.float32,) * 2
    for got, want in ((y_c, y), (dx_c, dx)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("op,args", OPCHECK)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_with_gradients(op, args, device):
    values = [a(device).requires_grad_() if callable(a) else a for a in args]
    torch.library.opcheck(getattr(torch.ops.normgen, op).default, values)


@pytest.mark.gpu
def test_cuda_graph_of_training_step():
    """make_graphed_callables captures the module's forward and backward in CUDA graphs."""
    module = generated.RMSNorm(256, dtype=torch.bfloat16, device="cuda")
    with torch.no_grad():
        module.weight.normal_()
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    gy = torch.randn_like(x)
    module(x).backward(gy)
    want_x, want_w = x.grad.clone(), module.weight.grad.clone()
    x.grad = module.weight.grad = None
    graphed = torch.cuda.make_graphed_callables(module, (x,))
    for _ in range(2):
        x.grad = module.weight.grad = None
        graphed(x).backward(gy)
    torch.testing.assert_close(x.grad, want_x)
    torch.testing.assert_close(module.weight.grad, want_w)
