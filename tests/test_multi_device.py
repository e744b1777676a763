"""Tensors on a cuda device other than the current one (needs two GPUs; skipped with fewer).

Triton launches a kernel on the current device's stream, with the kernel loaded for the
current device. A call whose tensors live on cuda:1 while cuda:0 is current must still
run on cuda:1, after the work cuda:1's stream has queued: every op is called that way,
right behind a copy that cuda:1's stream holds back with a long sleep, and must return
what the same call returns with cuda:1 current (bit for bit), leave cuda:0 current, and
give the same gradients. Every call form goes through twice: the first call makes the
launch, the second takes the cached one. The devices have peer access (a copy between them
turns it on): without it Triton refuses cuda:1's pointers on cuda:0; with it such a kernel
would run on cuda:0's stream, unordered with cuda:1's.
"""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch

import generated

from .test_host import OPS, _bits

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two cuda devices"),
]


SHAPES = [(4, 2048), (3, 5, 111), (257, 4096)]
SLEEP_CYCLES = 20_000_000  # cuda:1's stream sleeps this long before its copy of the inputs lands


def _inputs(op, shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    n = shape[-1]
    x = torch.randn(shape, generator=g).to(dtype)
    r = torch.randn(shape, generator=g).to(dtype) if op.has_residual else None
    w = (1 + 0.5 * torch.randn(n, generator=g)).to(dtype) if op.has_weight else None
    b = (0.1 * torch.randn(n, generator=g)).to(dtype) if op.has_bias else None
    return x, r, w, b


def _on(device, tensors, late):
    """The CPU tensors on ``device``; ``late``: their copy is queued behind a sleep on its stream."""
    staged = [t.to(device) if t is not None else None for t in tensors]
    out = [torch.empty_like(t) if t is not None else None for t in staged]
    with torch.cuda.device(device):
        torch.cuda.synchronize()
        if late:
            torch.cuda._sleep(SLEEP_CYCLES)
        for o, t in zip(out, staged, strict=True):
            if o is not None:
                o.copy_(t)  # device to device: queued, the host goes on
    return out


def _call(fn, op, args, form):
    mode, mean, rstd, inplace = form
    kwargs = {}
    if op.has_residual:
        kwargs.update(norm_pos=mode, inplace=inplace)
    if "mean" in op.stats:
        kwargs["return_mean"] = mean
    if "rstd" in op.stats:
        kwargs["return_rstd"] = rstd
    x, r, w, b = args
    positional = [x] + ([r] if op.has_residual else []) + ([w] if op.has_weight else [])
    if op.has_bias:
        kwargs["bias"] = b
    result = fn(*positional, **kwargs)
    return [t for t in (result if isinstance(result, tuple) else (result,))] + [x] + ([r] if r is not None else [])


def _forms(op):
    return itertools.product(
        op.call_modes, (False, "mean" in op.stats), (False, "rstd" in op.stats), (False, op.has_residual)
    )


@pytest.fixture(autouse=True)
def peer_access():
    """A copy between the two devices, as a model split across them makes: torch then enables peer
    access, and a kernel on cuda:0 may read cuda:1's memory (Triton no longer refuses the pointers)."""
    torch.ones(1, device="cuda:0").to("cuda:1")
    torch.cuda.synchronize(0), torch.cuda.synchronize(1)


@pytest.mark.parametrize("name", OPS)
def test_a_call_on_another_device_runs_there(name):
    op = importlib.import_module(f"generated.{name}").OP
    fn = getattr(generated, name)
    torch.cuda.set_device(0)
    for shape, dtype, form in itertools.product(SHAPES, (torch.bfloat16, torch.float32), _forms(op)):
        cpu = _inputs(op, shape, dtype, seed=len(shape) + shape[-1])
        runs = []
        for _ in range(2):  # the first call makes the launch, the second takes the cached one
            got = _call(fn, op, _on("cuda:1", cpu, late=True), form)
            assert torch.cuda.current_device() == 0, f"{name}: the call left cuda:{torch.cuda.current_device()} current"
            assert all(t.device == torch.device("cuda:1") for t in got), (name, [t.device for t in got])
            runs.append([t.cpu() for t in got])
        with torch.cuda.device(1):  # (after: the calls above are each launch's first)
            expected = [t.cpu() for t in _call(fn, op, _on("cuda:1", cpu, late=False), form)]
        for attempt, got in enumerate(runs):
            for e, t in zip(expected, got, strict=True):
                assert torch.equal(_bits(e), _bits(t)), (name, shape, dtype, form, attempt)


@pytest.mark.parametrize("name", [n for n in OPS if importlib.import_module(f"generated.{n}").OP.backward])
def test_gradients_on_another_device(name):
    op = importlib.import_module(f"generated.{name}").OP
    fn = getattr(generated, name)
    torch.cuda.set_device(0)
    for shape, mode in itertools.product(SHAPES, op.call_modes):
        cpu = _inputs(op, shape, torch.bfloat16, seed=shape[-1])
        form = (mode, False, False, False)

        def grads(late, cpu=cpu, form=form):
            args = _on("cuda:1", cpu, late)
            for t in args:
                if t is not None:
                    t.requires_grad_(True)
            outputs = _call(fn, op, args, form)[: 1 + op.has_residual]
            g = torch.Generator().manual_seed(1)
            seeds = [torch.randn(o.shape, generator=g).to(o) for o in outputs]
            torch.autograd.backward(outputs, seeds)
            return [o.detach().cpu() for o in outputs] + [t.grad.cpu() for t in args if t is not None]

        runs = []
        for _ in range(2):
            runs.append(grads(late=True))
            assert torch.cuda.current_device() == 0
        with torch.cuda.device(1):
            expected = grads(late=False)
        for attempt, got in enumerate(runs):
            for e, t in zip(expected, got, strict=True):
                assert torch.equal(e, t), (name, shape, mode, attempt)


@pytest.mark.parametrize("name", OPS)
def test_a_call_on_another_device_after_calls_with_it_current(name):
    """The launch made with cuda:1 current first (the fast path's record, then the C++ host path
    serving it), then the same call with cuda:0 current: the C++ path must decline it (its launch goes
    to the current device) and the call still run on cuda:1, behind cuda:1's queued work."""
    from dsl import host

    assert host.module(wait=True) is not None, host._state["error"]
    op = importlib.import_module(f"generated.{name}").OP
    fn = getattr(generated, name)
    for form in [f for f in _forms(op) if not (f[1] or f[2])]:  # (each mode, in place or not)
        cpu = _inputs(op, (257, 4096), torch.bfloat16, seed=7)
        torch.cuda.set_device(1)
        for _ in range(3):  # the fast path's record, then the C++ path's calls
            expected = [t.cpu() for t in _call(fn, op, _on("cuda:1", cpu, late=False), form)]
        native = op.twin
        assert native is not None, name
        served = native.served()
        _call(fn, op, _on("cuda:1", cpu, late=False), form)
        assert native.served() == served + 1, f"{name} {form}: the C++ path did not serve the call with cuda:1 current"
        torch.cuda.set_device(0)
        for _ in range(2):
            got = _call(fn, op, _on("cuda:1", cpu, late=True), form)
            assert torch.cuda.current_device() == 0
            for e, t in zip(expected, got, strict=True):
                assert t.device == torch.device("cuda:1") and torch.equal(_bits(e), _bits(t.cpu())), (name, form)
        assert native.served() == served + 1, f"{name} {form}: the C++ path served a call off the current device"
