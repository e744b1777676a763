"""Module calls on the C++ host path (dsl/host.cpp ``call_module``, dsl/modules.py ``_call_with_twin``).

Without a GPU: a module call is declined before the tensor checks wherever nn.Module's __call__
would do more than call the op's forward (hooks, a compiled call, another forward, a
parametrization, swap_norms's dtype rule with mixed dtypes); the modules' call is installed with
the first twin and still reaches torch.fx's patched __call__.

On the GPU: a plain module call is served without nn.Module's __call__, bit for bit the functional
result, with the parameters from the parameter dict (a parametrized bias included); hooks, a
compiled call and other forwards take effect; the dtype rule refuses mixed dtypes even where the
op's twin holds their launch.
"""

from __future__ import annotations

import pytest
import torch

import generated
from dsl import host

from .conftest import needs_compiler, op_of
from .test_host import _bits


def _module_cases():
    """(what, module, undo) for each module state in which nn.Module's __call__ does more than call
    the op's forward: the C++ twin must decline all of them."""
    from torch.nn.modules import module as nn_module

    def made(build):
        def case():
            m = generated.RMSNorm(64)
            undo = build(m)
            return m, undo

        return case

    class OwnForward(generated.RMSNorm):
        def forward(self, x):
            return x

    class OwnRun(generated.RMSNorm):
        def _run(self, x, residual, norm_pos):
            return x

    def hook(register):
        return made(lambda m: register(m).remove)

    def global_hook(register):
        return made(lambda m: register(lambda *a: None).remove)

    def set_attr(name, value):
        return made(lambda m: setattr(m, name, value))

    return {
        "a forward hook": hook(lambda m: m.register_forward_hook(lambda *a: None)),
        "a forward pre-hook": hook(lambda m: m.register_forward_pre_hook(lambda *a: None)),
        "a backward hook": hook(lambda m: m.register_full_backward_hook(lambda *a: None)),
        "a backward pre-hook": hook(lambda m: m.register_full_backward_pre_hook(lambda *a: None)),
        "a global forward hook": global_hook(nn_module.register_module_forward_hook),
        "a global forward pre-hook": global_hook(nn_module.register_module_forward_pre_hook),
        "a global backward hook": global_hook(nn_module.register_module_full_backward_hook),
        "a global backward pre-hook": global_hook(nn_module.register_module_full_backward_pre_hook),
        "module.compile()": set_attr("_compiled_call_impl", lambda *a, **k: None),
        "a forward set on the instance": set_attr("forward", lambda x: x),
        "a subclass's forward": lambda: (OwnForward(64), None),
        "a subclass's _run": lambda: (OwnRun(64), None),
    }


@needs_compiler
def test_a_module_call_is_declined_where_nn_module_would_do_more(ext):
    """op.call_module serves a module call only where nn.Module's __call__ would just call the op's
    forward. On CPU every call is declined in the end (CPU tensors); a module that passes the module
    checks is declined where a direct call with the same tensors is, any other before that."""
    op = op_of("rmsnorm")
    native = host.make_op(op, ext)
    x = torch.randn(3, 64)
    plain = generated.RMSNorm(64)
    assert native(x, None, plain.weight, None, plain.eps, None, False, False, False) is None
    at_the_tensors = native.declined()
    assert native.call_module(plain, x) is None and native.declined() == at_the_tensors
    for what, case in _module_cases().items():
        module, undo = case()
        assert native.call_module(module, x) is None
        assert native.declined() != at_the_tensors, f"{what}: passed the module checks"
        if undo is not None:
            undo()
    assert native.call_module(plain, x, x) is None and native.declined() != at_the_tensors  # one tensor too many
    ruled = generated.RMSNorm(64)
    ruled.dtype_rule = lambda module, x: None  # (swap_norms's refuses mixed dtypes)
    assert native.call_module(ruled, x) is None and native.declined() == at_the_tensors  # one dtype: served
    assert native.call_module(ruled, x.bfloat16()) is None and native.declined() != at_the_tensors, "mixed dtypes"
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    parametrize.register_parametrization(plain, "weight", Double())  # weight leaves the parameter dict
    assert native.call_module(plain, x) is None and native.declined() != at_the_tensors


@needs_compiler
def test_module_calls_try_the_twin_once_one_exists_and_fx_still_sees_them(ext):
    """Making a twin gives the modules the call that tries it (until then nn.Module's own, a frame
    shorter); a call the twin declines goes through nn.Module's __call__ as looked up at call time, so
    torch.fx's tracer, which patches it, still records the module as a leaf where it is told to."""
    from dsl import modules

    host.make_op(op_of("rmsnorm"), ext)
    assert generated.RMSNorm.__call__ is modules._call_with_twin

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = generated.RMSNorm(64)

        def forward(self, x):
            return self.norm(x) * 2

    class Leaves(torch.fx.Tracer):
        def is_leaf_module(self, m, qualified_name):
            return isinstance(m, generated.RMSNorm) or super().is_leaf_module(m, qualified_name)

    graph = Leaves().trace(Model())
    assert [n.target for n in graph.nodes if n.op == "call_module"] == ["norm"]


@pytest.mark.gpu
def test_a_module_call_skips_nn_modules_call_only_where_that_would_only_call_forward(monkeypatch):
    """The C++ twin serves a plain module call without nn.Module's __call__ (bit for bit the
    functional result); where a hook, a compiled call or another forward is in place, nn.Module's
    __call__ runs and they take effect."""
    from torch.nn.modules import module as nn_module

    assert host.module(wait=True) is not None
    entered = []
    module_call = torch.nn.Module.__call__

    def counting(self, *args, **kwargs):
        entered.append(type(self).__name__)
        return module_call(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", counting)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 4096, generator=g).to("cuda", torch.bfloat16)
    m = generated.RMSNorm(4096).to("cuda", torch.bfloat16)
    with torch.no_grad():
        m.weight.copy_(torch.rand(4096, generator=g) + 0.5)
        expected = generated.rmsnorm(x, m.weight, m.eps)
        for _ in range(3):
            m(x)
        native = m.op.twin
        count, entered[:] = native.served(), []
        got = m(x)
        assert native.served() == count + 1 and entered == [] and torch.equal(got, expected)

        seen = []
        doubled = generated.rmsnorm(2 * x, m.weight, m.eps)
        for what, register in {
            "forward hook": lambda: m.register_forward_hook(lambda mod, args, out: 2 * out),
            "forward pre-hook": lambda: m.register_forward_pre_hook(lambda mod, args: (2 * args[0],)),
            "global forward hook": lambda: nn_module.register_module_forward_hook(lambda *a: seen.append(1)),
        }.items():
            handle = register()
            entered[:] = []
            got = m(x)
            handle.remove()
            assert entered == ["RMSNorm"], what
            want = {"forward hook": 2 * expected, "forward pre-hook": doubled, "global forward hook": expected}[what]
            assert torch.equal(got, want), what
        assert seen == [1]

        m._compiled_call_impl = lambda *a, **k: "compiled"
        assert m(x) == "compiled"
        del m._compiled_call_impl
        m.forward = lambda x: "instance forward"
        assert m(x) == "instance forward"
        del m.forward

        class OwnForward(generated.RMSNorm):
            def forward(self, x):
                return "subclass forward"

        sub = OwnForward(4096).to("cuda", torch.bfloat16)
        for _ in range(3):
            assert sub(x) == "subclass forward"
        count = native.served()
        assert torch.equal(m(x), expected) and native.served() == count + 1  # and back again

        # swap_norms's dtype rule: mixed dtypes go to the replaced layer even where the op's twin holds
        # their launch
        from dsl.hf import _OwnForOtherDtypes

        class Replaced(torch.nn.Module):  # stands in for the layer swap_norms replaced
            def forward(self, x):
                return ("replaced layer", x.dtype, self.weight.dtype)

        swapped = generated.RMSNorm(4096).to("cuda")  # fp32 weight
        replaced = Replaced()
        replaced.weight = torch.nn.Parameter(swapped.weight.detach().clone())
        swapped.dtype_rule = _OwnForOtherDtypes(replaced, False)  # (LlamaRMSNorm's: one dtype only)
        for _ in range(3):
            generated.rmsnorm(x, swapped.weight, swapped.eps)  # bf16 x, fp32 weight: a record
        assert swapped(x) == ("replaced layer", torch.bfloat16, torch.float32)
        x32 = x.float()
        for _ in range(3):
            swapped(x32)
        count = native.served()
        assert torch.equal(swapped(x32), generated.rmsnorm(x32, swapped.weight, swapped.eps))
        assert native.served() == count + 2  # the module call, then the functional one


@pytest.mark.gpu
def test_modules_take_the_cxx_path_and_read_a_parametrized_bias():
    """A module call goes to the C++ twin with the parameters from nn.Module's dict; a bias that a
    parametrization computes is not in that dict, and the call must use it, not drop it."""
    from torch.nn.utils import parametrize

    assert host.module(wait=True) is not None
    g = torch.Generator().manual_seed(1)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to("cuda", torch.bfloat16)

    x, r = rand(16, 4096), rand(16, 4096)
    cases = [
        (generated.RMSNorm(4096), (x,), lambda m: generated.rmsnorm(x, m.weight, m.eps)),
        (generated.AddRMSNorm(4096), (x, r), lambda m: generated.add_rmsnorm(x, r, m.weight, m.eps)),
        (
            generated.AddRMSNorm(4096, norm_pos="post"),
            (x, r),
            lambda m: generated.add_rmsnorm(x, r, m.weight, m.eps, "post"),
        ),
        (
            generated.AddRMSNormInt8(4096),
            (x, r),
            lambda m: generated.add_rmsnorm_int8(x, r, m.weight, m.eps),
        ),
        (
            generated.AddLayerNormFP8(4096, norm_pos="post"),
            (x, r),
            lambda m: generated.add_layernorm_fp8(x, r, m.weight, m.bias, m.eps, "post"),
        ),
        (generated.LayerNorm(4096), (x,), lambda m: generated.layernorm(x, m.weight, m.bias, m.eps)),
    ]
    with torch.no_grad():
        for module, args, functional in cases:
            module = module.to("cuda", torch.bfloat16)
            for p in module.parameters():
                p.copy_(rand(4096))
            expected = functional(module)
            for _ in range(3):
                module(*args)
            native = module.op.twin
            count = native.served()
            got = module(*args)
            assert native.served() == count + 1, type(module).__name__
            for e, t in zip(
                expected if isinstance(expected, tuple) else (expected,),
                got if isinstance(got, tuple) else (got,),
                strict=True,
            ):
                assert e.dtype == t.dtype and e.shape == t.shape, type(module).__name__
                assert torch.equal(_bits(e), _bits(t)), type(module).__name__

        class Double(torch.nn.Module):
            def forward(self, b):
                return 2 * b

        module = cases[-1][0]
        for _ in range(3):  # a record without bias: a call that dropped the bias would be served wrong
            generated.layernorm(x, module.weight, None, module.eps)
        parametrize.register_parametrization(module, "bias", Double())
        expected = generated.layernorm(x, module.weight, 2 * module.parametrizations.bias.original, module.eps)
        for _ in range(3):
            got = module(x)
        assert torch.equal(got, expected)
