"""The op surface's launches and its fast path (dsl/surface.py), checked without a GPU.

A tensor subclass that says it is on cuda:0 takes both the eager fast path and the
checked path to the launch, where a recording launcher stands in for the kernels
(and, once asked, for the direct launch the real launcher caches). Both paths must
pass the same launch key and arguments, and every argument must be what the kernel ABI
says its parameter is. (That the fast path refuses exactly what the checked path
refuses, and accepts the same calls with the same launches, results and version bumps:
tests/test_fast_path.py.)
"""

import importlib

import pytest
import torch

from dsl import fast_path, runtime
from dsl.abi import Kind, Source

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
    """recording(name, direct_after=None) -> (op, recorder): see ``make_recording``."""
    return make_recording(monkeypatch)


def make_recording(monkeypatch):
    """recording(name, direct_after=None) -> (op, recorder): the op's cuda launches recorded, its
    fast-path records fresh; a stream getter stands in for CUDA's."""
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: 0, raising=False)
    monkeypatch.setattr(runtime, "current_cuda_device", lambda: CUDA0.index)
    empty = torch.empty  # the checked path allocates statistics with device=x.device: here, on the CPU
    # Dynamo maps torch's functions to its rules once per process, by identity: built while torch.empty
    # is the stand-in below (a call that needs a gradient builds it), the real one would later read as
    # an unknown function to every compiled test in this process. Built first, with the real one.
    torch._dynamo.trace_rules.get_torch_obj_rule_map()
    monkeypatch.setattr(torch, "empty", lambda *size, device=None, **kw: empty(*size, **kw))

    def make(name, direct_after=None):
        op = importlib.import_module(f"generated.{name}").OP
        kernels = importlib.import_module(f"generated.{name}_cuda")
        recorder = Recorder(kernels.LAUNCHER.abi, direct_after)
        monkeypatch.setattr(kernels, "LAUNCHER", recorder)
        monkeypatch.setattr(op, "_launches", {})
        monkeypatch.setattr(op, "_forms", {key: fast_path.Form(op, *key) for key in op._forms})
        monkeypatch.setattr(op, "native", None)  # the C++ path (dsl/host.py) neither serves nor takes records:
        monkeypatch.setattr(op, "_native_record", lambda *args: False)  # it launches the real kernels
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


def test_another_current_device_takes_the_launcher(recording, monkeypatch):
    """The direct launch goes to the current device; with x on cuda:0 while cuda:1 is current the fast
    path hands every call to the launcher, which makes x's device current for the launch."""
    monkeypatch.setattr(runtime, "device_count", lambda target: 2)  # (with one, the fast path does not ask)
    op, recorder = recording("add_rmsnorm", direct_after=1)
    x, r, w = (says_cuda(torch.randn(*shape)) for shape in ((4, 64), (4, 64), (64,)))
    op(x, r, w, None, 1e-6, "pre", False, False, False)
    op(x, r, w, None, 1e-6, "pre", False, False, False)
    monkeypatch.setattr(runtime, "current_cuda_device", lambda: 1)
    op(x, r, w, None, 1e-6, "pre", False, False, False)
    assert [c[0] for c in recorder.calls] == ["launcher", "direct", "launcher"]


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
