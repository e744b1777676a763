"""The op surface's launches and its fast path (dsl/surface.py), checked without a GPU.

A tensor subclass that says it is on cuda:0 takes both the eager fast path and the
checked path to the launch, where a recording launcher stands in for the kernels
(and, once asked, for the direct launch the real launcher caches). Both paths must
pass the same launch key and arguments, every argument must be what the kernel ABI
says its parameter is, and the fast path must refuse exactly what the checked path
refuses: the same calls, turned away with the same error, and the same calls
accepted, with the same launches, results and version bumps.
"""

import contextlib
import importlib
from typing import NamedTuple

import pytest
import torch

from dsl import fast_path
from dsl.abi import Kind, Source
from dsl.runtime import NormgenError

from .cases import SPECS, make_inputs, modes

CUDA0 = torch.device("cuda", 0)


class SaysCuda(torch.Tensor):
    """A CPU tensor that answers like a tensor on cuda:0."""

    @property
    def is_cuda(self):
        return True

    @property
    def device(self):
        return CUDA0

    def get_device(self):
        return 0


def says_cuda(t):
    return t.as_subclass(SaysCuda)


class NotAFloat(float):
    """eps that the fast path does not take (its type is not float); the checks turn it into a float."""


class Recorder:
    """Stands in for an op's cuda Launcher; after ``direct_after`` launches of a key it also has a
    direct launch for it (as the real one has after compiling), which records too."""

    def __init__(self, abi, direct_after=None):
        self.abi, self.calls, self.direct_after = abi, [], direct_after

    def __call__(self, key, aligned, device, args):
        self.calls.append(("launcher", key, aligned, device, args))

    def cached_launch(self, key, device):
        launched = sum(1 for c in self.calls if c[1] == key)
        if self.direct_after is None or launched < self.direct_after:
            return None

        def launch(grid, one, one_, stream, function, *rest):
            self.calls.append(("direct", key, True, device, rest[len(prefix) : len(rest) - len(constexprs)]))

        prefix, constexprs = ("prefix",) * 3, ("constexpr",) * 2
        return launch, 1, "function", prefix, constexprs


@pytest.fixture
def recording(monkeypatch):
    """recording(name, direct_after=None) -> (op, recorder): the op's cuda launches recorded, its
    fast-path records fresh; a stream getter stands in for CUDA's."""
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: 0, raising=False)
    empty = torch.empty  # the checked path allocates statistics with device=x.device: here, on the CPU
    monkeypatch.setattr(torch, "empty", lambda *size, device=None, **kw: empty(*size, **kw))

    def make(name, direct_after=None):
        op = importlib.import_module(f"generated.{name}").OP
        kernels = importlib.import_module(f"generated.{name}_cuda")
        recorder = Recorder(kernels.LAUNCHER.abi, direct_after)
        monkeypatch.setattr(kernels, "LAUNCHER", recorder)
        monkeypatch.setattr(op, "_launches", {})
        monkeypatch.setattr(op, "_forms", {key: fast_path.Form(op, *key) for key in op._forms})
        return op, recorder

    return make


def _dtype(spec):
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[spec.dtypes[0].value]


def _cases():
    for name, spec in sorted(SPECS.items()):
        for mode in modes(spec):
            for stat in ("mean", "rstd"):
                yield name, mode, stat


@pytest.mark.parametrize("name, mode, stat", list(_cases()))
def test_fast_and_checked_paths_launch_what_the_abi_says(name, mode, stat, recording):
    """``stat``: the one statistic asked for (where the op stores it), so that each switch is seen alone."""
    spec = SPECS[name]
    op, recorder = recording(name)
    dtype = _dtype(spec)
    inputs = {k: says_cuda(t) for k, t in make_inputs(spec, 6, 64, dtype, "cpu", "2d").items()}
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

    (_, key_fast, aligned_fast, device_fast, args_fast), (_, key_checked, *rest, args_checked) = recorder.calls
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
    assert key_fast[0] is dtype and key_fast[-1] is (weight.dtype if weight is not None else dtype)
    assert key_fast[1:-1] == tuple(value[p.name] for p in abi.key)


@pytest.mark.parametrize("name", ["add_rmsnorm", "layernorm", "add_layernorm_int8"])
def test_direct_launch_passes_the_inputs_pointers(name, recording):
    """Once the launcher has a direct launch, the fast path calls it: the same arguments, with
    the inputs as their data pointers (ints), and only for 16-byte aligned inputs."""
    spec = SPECS[name]
    op, recorder = recording(name, direct_after=1)
    inputs = {k: says_cuda(t) for k, t in make_inputs(spec, 6, 64, torch.float32, "cpu", "2d").items()}
    args = [inputs.get(k) for k in ("x", "residual", "weight", "bias")]
    mode = modes(spec)[0]
    op(*args, 1e-5, mode, False, False, False)
    op(*args, 1e-5, mode, False, False, False)
    (via_launcher, key, _, _, first), (direct, key_direct, _, _, second) = recorder.calls
    assert (via_launcher, direct, key_direct) == ("launcher", "direct", key)
    pointers = {t.data_ptr(): k for k, t in inputs.items()}
    for a, b in zip(first, second, strict=True):
        if isinstance(a, torch.Tensor) and any(a is t for t in inputs.values()):
            assert type(b) is int and pointers[b] in inputs and inputs[pointers[b]] is a
        elif isinstance(a, torch.Tensor):
            assert isinstance(b, torch.Tensor) and a.shape == b.shape
        else:
            assert a == b and type(a) is type(b)
    # a misaligned x (a view 4 bytes into its storage) goes to the launcher, which picks Triton's path
    base = says_cuda(torch.randn(6 * 64 + 1))
    args[0] = base[1:].view(6, 64)
    if spec.has_residual:
        args[1] = says_cuda(torch.randn(6, 64))
    op(*args, 1e-5, mode, False, False, False)
    assert recorder.calls[-1][0] == "launcher" and recorder.calls[-1][2] is False


def test_the_weights_dtype_is_part_of_the_launch_key(recording):
    """A bf16 x of one shape with a bf16 weight, then with an fp32 one: each gets its own record and
    launch key (Triton compiles a kernel per pointer dtype), so the direct launch the launcher made
    for the bf16 weight never serves the fp32 one."""
    op, recorder = recording("add_rmsnorm", direct_after=1)
    x, r = (says_cuda(torch.randn(4, 64).bfloat16()) for _ in range(2))
    for w in [says_cuda(torch.ones(64).bfloat16())] * 2 + [says_cuda(torch.ones(64))] * 2:
        op(x, r, w, None, 1e-6, "pre", False, False, False)
    assert [c[0] for c in recorder.calls] == ["launcher", "direct", "launcher", "direct"]
    keys = [c[1] for c in recorder.calls]
    assert keys[0] == keys[1] != keys[2] == keys[3]
    assert (keys[0][0], keys[0][-1], keys[2][0], keys[2][-1]) == (torch.bfloat16,) * 3 + (torch.float32,)


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
    yield (
        "inplace, residual of another dtype",
        call(*pair()[:1], says_cuda(torch.randn(4, 64, dtype=torch.float16))),
        False,
    )
    yield "functional pre", call(*pair(), inplace=False), True
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
    """return_rstd=1 is a form of its own only where it equals True; 2 or None go to the checks."""
    op, recorder = recording("add_rmsnorm")
    x, r, w = (says_cuda(torch.randn(2, 64)) for _ in range(2)), None, says_cuda(torch.ones(64))
    x, r = x
    assert len(op(x, r, w, None, 1e-6, "pre", False, 1, False)) == 3
    assert len(op(x, r, w, None, 1e-6, "pre", False, None, False)) == 2
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
