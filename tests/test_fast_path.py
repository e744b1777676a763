"""The eager fast path (dsl/surface.py, dsl/fast_path.py) against the checked path, without a GPU:
it refuses exactly what the checks refuse (the same calls, the same errors) and accepts the same
calls with the same launches, results and version bumps; npu tensors take it too. The stand-in
tensors and the recording launcher are tests/test_surface.py's.
"""

import contextlib
import importlib
from typing import NamedTuple

import numpy as np
import pytest
import torch

from dsl.runtime import NormgenError

from .cases import SPECS, make_inputs
from .conftest import op_of
from .test_surface import Recorder, _dtype, make_recording, says_cuda


@pytest.fixture
def recording(monkeypatch):
    """recording(name, direct_after=None) -> (op, recorder), as in tests/test_surface.py."""
    return make_recording(monkeypatch)


# ----------------------------------------------------------------------------
# The fast path refuses what the checked path refuses


def _outcome(op, recorder, monkeypatch, make_call, fast: bool):
    """What a call did: ('error', type, message) or ('ok', launches, result, version bumps), and
    whether it took the fast path (the checked path calls op.check)."""
    checked = []
    real_check = op.check
    monkeypatch.setattr(op, "check", lambda *a: checked.append(1) or real_check(*a))
    if not fast:
        monkeypatch.setattr(op, "_forms", {})  # no call form: every call takes the checked path
    recorder.calls.clear()
    args, context = make_call()
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    with context():
        before = [t._version if not t.is_inference() else None for t in tensors]
        try:
            result = op(*args)
        except Exception as error:  # noqa: BLE001 - the outcome compared
            return ("error", type(error), str(error)), not checked
        after = [t._version if not t.is_inference() else None for t in tensors]
    result = result if isinstance(result, tuple) else (result,)

    def role(a):
        for i, t in enumerate(tensors):
            if a is t:
                return f"input {i}"
        return (tuple(a.shape), a.dtype, a.stride()) if isinstance(a, torch.Tensor) else a

    launches = [(key, aligned, [role(a) for a in args]) for _, key, aligned, _, args in recorder.calls]
    bumped = [b > a if a is not None else None for a, b in zip(before, after, strict=True)]
    return ("ok", launches, [role(r) for r in result], bumped), not checked


def _add_rmsnorm_calls():
    """(id, make_call, takes the fast path): calls of add_rmsnorm, most of them refused."""
    w = says_cuda(torch.ones(64))

    def pair(rows=4, **kw):
        return says_cuda(torch.randn(rows, 64, **kw)), says_cuda(torch.randn(rows, 64, **kw))

    def call(x, r, weight=w, eps=1e-6, mode="pre", rstd=False, inplace=True, context=contextlib.nullcontext):
        return lambda: ((x, r, weight, None, eps, mode, False, rstd, inplace), context)

    base = says_cuda(torch.randn(9, 64))
    same = says_cuda(torch.randn(4, 64))
    leaf = says_cuda(torch.randn(4, 64)).requires_grad_()
    with torch.inference_mode():
        inference = pair()
    yield "inplace pre", call(*pair()), True
    yield "inplace post", call(*pair(), mode="post"), True
    yield "inplace with rstd", call(*pair(), rstd=True), True
    yield "inplace, rows apart in one buffer", call(base[:4], base[4:8]), True
    yield "inplace, x is residual", call(same, same), False
    yield "inplace, overlapping rows of one buffer", call(base[:4], base[3:7]), False
    yield (
        "inplace, overlapping by one element",
        call(base.view(-1)[:256].view(4, 64), base.view(-1)[255:511].view(4, 64)),
        False,
    )
    yield "inplace, inference tensors outside inference mode", call(*inference), False
    yield "inplace, inference tensors in inference mode", call(*inference, context=torch.inference_mode), True
    yield "inplace, x needs grad", call(leaf, says_cuda(torch.randn(4, 64))), False
    yield "inplace, x needs grad, no_grad", call(leaf, says_cuda(torch.randn(4, 64)), context=torch.no_grad), True
    yield "inplace, expanded x", call(says_cuda(torch.randn(1, 64)).expand(4, 64), says_cuda(torch.randn(4, 64))), False
    yield "inplace, padded rows", call(base[:4, :32], base[4:8, :32], weight=says_cuda(torch.ones(32))), False
    yield "inplace, the weight a row of x", call(base[:4], base[4:8], weight=base[2]), False
    yield "inplace, the weight a row of residual", call(base[:4], base[4:8], weight=base[7]), False
    yield "inplace, the weight beside x and residual", call(base[:4], base[4:8], weight=base[8]), True
    yield (
        "inplace, residual of another dtype",
        call(*pair()[:1], says_cuda(torch.randn(4, 64, dtype=torch.float16))),
        False,
    )
    yield "functional pre", call(*pair(), inplace=False), True
    # lazily negated views (torch's negative bit: the kernels would read their memory as it is)
    yield "functional, negated x", call(torch._neg_view(-pair()[0]), pair()[1], inplace=False), False
    yield "inplace, negated residual", call(pair()[0], torch._neg_view(-pair()[1])), False
    yield "functional, negated weight", call(*pair(), weight=torch._neg_view(-w), inplace=False), False
    # the switches: True or False, or numbers equal to them (the forms are found by equality)
    yield "functional, inplace 0.0", call(*pair(), inplace=0.0), True
    yield "inplace, inplace 1.0", call(*pair(), inplace=1.0), True
    yield "functional, return_rstd np.float64(1)", call(*pair(), rstd=np.float64(1), inplace=False), True
    yield "functional, inplace 'no'", call(*pair(), inplace="no"), False
    yield "functional, return_rstd None", call(*pair(), rstd=None, inplace=False), False
    padded = says_cuda(torch.randn(4, 96))
    yield "functional, padded rows of x", call(padded[:, :64], says_cuda(torch.randn(4, 64)), inplace=False), False
    yield (
        "functional, padded rows of residual",
        call(says_cuda(torch.randn(4, 64)), padded[:, :64], inplace=False),
        False,
    )
    yield "functional, strided weight", call(*pair(), weight=says_cuda(torch.ones(128))[::2], inplace=False), False
    yield "functional, 3-D, no rows", call(*(says_cuda(torch.randn(0, 5, 64)) for _ in range(2)), inplace=False), True
    yield (
        "functional, weight needs grad",
        call(*pair(), weight=says_cuda(torch.ones(64)).requires_grad_(), inplace=False),
        False,
    )
    yield "functional, weight of another width", call(*pair(), weight=says_cuda(torch.ones(65)), inplace=False), False
    yield "functional, weight on the CPU", call(*pair(), weight=torch.ones(64), inplace=False), False
    yield (
        "functional, residual of another shape",
        call(says_cuda(torch.randn(4, 64)), says_cuda(torch.randn(2, 2, 64)), inplace=False),
        False,
    )
    yield "functional, eps < 0", call(*pair(), eps=-1.0, inplace=False), False
    yield "functional, eps nan", call(*pair(), eps=float("nan"), inplace=False), False
    # (finite, but inf in the kernels' fp32: the checks refuse it, so the fast path must not take it)
    yield "functional, eps above fp32's largest", call(*pair(), eps=3.5e38, inplace=False), False
    yield "functional, eps fp32's largest", call(*pair(), eps=float(np.finfo(np.float32).max), inplace=False), True
    yield "functional, eps True", call(*pair(), eps=True, inplace=False), False
    yield "functional, norm_pos middle", call(*pair(), mode="middle", inplace=False), False
    yield (
        "functional, int64 x",
        call(
            says_cuda(torch.ones(4, 64, dtype=torch.int64)),
            says_cuda(torch.ones(4, 64, dtype=torch.int64)),
            inplace=False,
        ),
        False,
    )
    yield "functional, x a list", call([[1.0] * 64], says_cuda(torch.randn(1, 64)), inplace=False), False
    half, fp32 = pair(dtype=torch.bfloat16), pair()
    yield "functional, bf16 x, fp32 weight", call(*half, inplace=False), True
    yield "inplace, bf16 x, fp32 weight", call(*pair(dtype=torch.bfloat16)), True
    yield (
        "functional, bf16 x, bf16 weight",
        call(*half, weight=says_cuda(torch.ones(64).bfloat16()), inplace=False),
        True,
    )
    yield "functional, bf16 x, fp16 weight", call(*half, weight=says_cuda(torch.ones(64).half()), inplace=False), False
    yield (
        "functional, bf16 x, fp64 weight",
        call(*half, weight=says_cuda(torch.ones(64).double()), inplace=False),
        False,
    )
    yield (
        "functional, fp32 x, bf16 weight",
        call(*fp32, weight=says_cuda(torch.ones(64).bfloat16()), inplace=False),
        False,
    )


CALLS = list(_add_rmsnorm_calls())


@pytest.mark.parametrize("index", range(len(CALLS)), ids=[c[0] for c in CALLS])
def test_fast_path_refuses_and_accepts_what_the_checks_do(index, recording, monkeypatch):
    """Each call twice: as it comes (fast path where proven) and with the fast path off. The
    outcomes are equal: the same error, or the same launches, results and version bumps."""
    _, make_call, takes_fast_path = CALLS[index]
    op, recorder = recording("add_rmsnorm")
    with_fast, was_fast = _outcome(op, recorder, monkeypatch, make_call, fast=True)
    checked_only, _ = _outcome(op, recorder, monkeypatch, make_call, fast=False)
    assert with_fast == checked_only
    assert was_fast == takes_fast_path, "the fast path took this call" if was_fast else "the fast path refused it"


def test_inplace_fast_path_bumps_versions(recording):
    """In place through the fast path: pre writes x and residual, post writes x; both versions counted."""
    op, _ = recording("add_rmsnorm")
    w = says_cuda(torch.ones(64))
    for mode, written in (("pre", (True, True)), ("post", (True, False))):
        x, r = says_cuda(torch.randn(4, 64)), says_cuda(torch.randn(4, 64))
        before = (x._version, r._version)
        y, s = op(x, r, w, None, 1e-6, mode, False, False, True)
        assert y is x and s is (r if mode == "pre" else x)
        assert (x._version > before[0], r._version > before[1]) == written, mode


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_call_form_returns_what_the_checked_path_returns(name, recording, monkeypatch):
    """Every form of every op (mode, statistics, in place): the fast path's outputs are the checked
    path's, in kind, shape, dtype, strides and which input they are."""
    spec = SPECS[name]
    op, recorder = recording(name)
    for key in list(op._forms):

        def make_call(key=key):
            inputs = {k: says_cuda(t) for k, t in make_inputs(spec, 3, 64, _dtype(spec), "cpu", "3d").items()}
            args = tuple(inputs.get(k) for k in ("x", "residual", "weight", "bias"))
            norm_pos, mean, rstd, inplace = key
            return (*args, 1e-5, norm_pos, mean, rstd, inplace), contextlib.nullcontext

        forms = op._forms
        with_fast, was_fast = _outcome(op, recorder, monkeypatch, make_call, fast=True)
        checked_only, _ = _outcome(op, recorder, monkeypatch, make_call, fast=False)
        monkeypatch.setattr(op, "_forms", forms)
        assert was_fast and with_fast[0] == "ok", (key, with_fast)
        assert with_fast == checked_only, key


def test_a_form_without_its_statistic_takes_the_checked_path(recording):
    """return_rstd=1 is a form of its own only where it equals True; 2 or None go to the checks, which
    refuse them (the switches take True or False only)."""
    op, recorder = recording("add_rmsnorm")
    x, r, w = (says_cuda(torch.randn(2, 64)) for _ in range(2)), None, says_cuda(torch.ones(64))
    x, r = x
    assert len(op(x, r, w, None, 1e-6, "pre", False, 1, False)) == 3
    for value in (None, 2):
        with pytest.raises(TypeError, match=f"return_rstd must be True or False, got {value}"):
            op(x, r, w, None, 1e-6, "pre", False, value, False)
    with pytest.raises(NormgenError, match="norm_pos"):
        op(x, r, w, None, 1e-6, None, False, False, False)


class NpuDevice(NamedTuple):
    """What torch_npu's torch.device("npu", 0) answers (CPU-only torch cannot make one)."""

    type: str = "npu"
    index: int = 0


class SaysNpu(torch.Tensor):
    """A CPU tensor that answers like a tensor on npu:0."""

    @property
    def device(self):
        return NpuDevice()

    def get_device(self):
        return 0


def test_npu_tensors_take_the_fast_path(monkeypatch, recording):
    """npu calls skip the checks too (the launcher then takes kernel[grid]): the same launches."""
    op, _ = recording("add_rmsnorm")
    kernels = importlib.import_module("generated.add_rmsnorm_npu")
    recorder = Recorder(kernels.LAUNCHER.abi)
    monkeypatch.setattr(kernels, "LAUNCHER", recorder)

    def make_call():
        x, r, w = (t.as_subclass(SaysNpu) for t in (torch.randn(4, 64), torch.randn(4, 64), torch.ones(64)))
        return (x, r, w, None, 1e-6, "pre", False, True, False), contextlib.nullcontext

    with_fast, was_fast = _outcome(op, recorder, monkeypatch, make_call, fast=True)
    checked_only, _ = _outcome(op, recorder, monkeypatch, make_call, fast=False)
    assert was_fast and with_fast[0] == "ok" and len(with_fast[1]) == 1
    assert with_fast == checked_only


def test_a_jit_trace_takes_the_custom_op_not_the_fast_path(recording, monkeypatch):
    """torch.jit.trace records dispatcher ops only: a fast-path launch would be missing from the trace.
    While tracing (``surface._is_tracing``, here made true), a call that the fast path would take goes
    to the checks and the custom op (``compiling_call``) instead."""
    from dsl import surface

    op, recorder = recording("add_rmsnorm")
    x, r, w = says_cuda(torch.randn(4, 64)), says_cuda(torch.randn(4, 64)), says_cuda(torch.ones(64))

    def call():
        return lambda: ((x, r, w, None, 1e-6, "pre", False, False, False), contextlib.nullcontext)

    _, was_fast = _outcome(op, recorder, monkeypatch, call(), fast=True)
    assert was_fast
    through = []
    monkeypatch.setattr(surface, "_is_tracing", lambda: True)
    monkeypatch.setattr(surface, "compiling_call", lambda *a: through.append(a) or (x, r))
    _, was_fast = _outcome(op, recorder, monkeypatch, call(), fast=True)
    assert not was_fast and len(through) == 1


@pytest.mark.parametrize("name", ["add_rmsnorm_int8", "add_layernorm_fp8", "add_rmsnorm"])
def test_outputs_of_an_x_with_odd_strides_in_size_one_dims_match_the_checked_path(name, recording, monkeypatch):
    """A contiguous x whose size-1 dimensions carry other strides (an (N, 1, 1, C) channels-last view):
    q was allocated like x on the fast path (x's strides) and row-major on the checked and C++ paths."""
    spec = SPECS[name]
    op, recorder = recording(name)

    def make_call():
        x, r = (says_cuda(torch.randn(4, 64, 1, 1).permute(0, 2, 3, 1)) for _ in range(2))
        w = says_cuda(torch.ones(64))
        b = says_cuda(torch.zeros(64)) if spec.has_bias else None
        return (x, r, w, b, 1e-6, "pre", False, False, False), contextlib.nullcontext

    fast, was_fast = _outcome(op, recorder, monkeypatch, make_call, fast=True)
    checked, _ = _outcome(op, recorder, monkeypatch, make_call, fast=False)
    assert was_fast and fast == checked


def test_a_tangent_is_refused_where_the_fast_path_has_a_record(recording):
    """Forward-mode AD: the fast path would take a dual x (it needs no gradient) and drop its tangent."""
    import torch.autograd.forward_ad as fwAD

    op, recorder = recording("add_rmsnorm")
    x, r, w = says_cuda(torch.randn(4, 64)), says_cuda(torch.randn(4, 64)), says_cuda(torch.ones(64))
    for _ in range(2):
        op(x, r, w, None, 1e-6, "pre", False, False, False)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(NormgenError, match="add_rmsnorm: x carries a forward-mode AD tangent"):
            op(dual, r, w, None, 1e-6, "pre", False, False, False)


def test_a_nested_or_sparse_x_gets_no_record(monkeypatch):
    """A jagged nested x looks like a dense one to the fast path's reads (shape, dtype, device,
    contiguity), and its data pointer is 0: on cuda the fast path made a record of it and launched at
    address 0. ``_record`` declines it, and any layout but torch.strided, so that the checks name it.
    Here the op takes CPU tensors as if they were its target's (a record would import the target's
    kernel module, which does not exist: the decline comes first)."""
    op = op_of("rmsnorm")
    monkeypatch.setattr(op, "kernels", {"cpu": "no_such_module"})
    form = next(iter(op._forms.values()))
    rows = [torch.randn(3, 64), torch.randn(5, 64)]
    for x in (torch.nested.nested_tensor(rows, layout=torch.jagged), torch.randn(4, 64).to_sparse()):
        assert op._record(form, x, None, torch.float32) is None, x.layout
    with pytest.raises(ModuleNotFoundError):  # (a dense x gets that far)
        op._record(form, torch.randn(4, 64), None, torch.float32)
