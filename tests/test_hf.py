"""The Hugging Face drop-in (dsl.hf.swap_norms) on tiny random-config transformers models.

Each model is built from a config in code (no downloads), its norm weights
randomized (ones or zeros would hide a wrong weight convention), and its logits
compared before and after the swap, in float32 and bfloat16, eagerly and under
torch.compile. On CPU the swapped layers run normgen's generated PyTorch
reference (the `reference_path` fixture turns the interpreter off for these
tests): the RMSNorm models (Llama, Mistral, Qwen2, Qwen3 with its per-head
q/k norms, Gemma, Gemma2, Gemma3) must give bit-identical logits, because the
reference rounds exactly where transformers' code does. GPT-2's torch.nn.LayerNorm
runs torch's fused layer_norm kernel, whose statistics are summed in another
order than the reference's, so its logits must be within one bf16 ulp of the
logits' largest magnitude. The `gpu` tests run the same models on CUDA through
the Triton kernels.

Logits are compared under torch.no_grad(); one training step's parameter
gradients are compared too (the swapped norms' backward against transformers'
autograd of its own norms).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import generated
from dsl.hf import swap_norms

pytestmark = pytest.mark.usefixtures("reference_path")  # CPU tensors run the generated reference (conftest.py)

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (it is in the test extra: pip install -e '.[test]')"
)

try:
    from transformers.models.olmo2.modeling_olmo2 import Olmo2RMSNorm
except ImportError:  # older transformers
    Olmo2RMSNorm = None

_LLAMA_LIKE = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
_GPT2 = dict(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)

# arch -> (config class, its kwargs, norm class, normgen class, norm layers in the model, CPU logits bit-identical)
ARCHS = {
    "llama": ("LlamaConfig", _LLAMA_LIKE, "LlamaRMSNorm", "RMSNorm", 5, True),
    "mistral": ("MistralConfig", _LLAMA_LIKE, "MistralRMSNorm", "RMSNorm", 5, True),
    "qwen2": ("Qwen2Config", _LLAMA_LIKE, "Qwen2RMSNorm", "RMSNorm", 5, True),
    # per layer: q_norm and k_norm over head_dim, input and post-attention norms
    "qwen3": ("Qwen3Config", dict(_LLAMA_LIKE, head_dim=16), "Qwen3RMSNorm", "RMSNorm", 9, True),
    "gemma": ("GemmaConfig", dict(_LLAMA_LIKE, head_dim=16), "GemmaRMSNorm", "GemmaRMSNorm", 5, True),
    # per layer: input, post-attention, pre- and post-feedforward norms
    "gemma2": ("Gemma2Config", dict(_LLAMA_LIKE, head_dim=16), "Gemma2RMSNorm", "GemmaRMSNorm", 9, True),
    # per layer: Gemma2's four and q_norm, k_norm
    "gemma3": ("Gemma3TextConfig", dict(_LLAMA_LIKE, head_dim=16), "Gemma3RMSNorm", "GemmaRMSNorm", 13, True),
    "gpt2": ("GPT2Config", _GPT2, "LayerNorm", "LayerNorm", 5, False),
}
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]


def tiny_model(arch, dtype, device="cpu"):
    """A 2-layer, 64-wide model of `arch` with random weights, norm weights included; and its input ids."""
    config_class, kwargs, *_ = ARCHS[arch]
    if not hasattr(transformers, config_class):
        pytest.skip(f"transformers {transformers.__version__} has no {config_class}")
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, config_class)(**kwargs))
    model = model.to(device=device, dtype=dtype).eval()
    with torch.no_grad():
        for module in model.modules():
            if "Norm" in type(module).__name__:
                for p in module.parameters():
                    p.add_(0.2 * torch.randn_like(p))
    ids = torch.randint(0, 128, (2, 9), device=device)
    return model, ids


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def bf16_ulp_at_scale(t):
    """One bfloat16 ulp at the largest magnitude of t."""
    top = t.detach().abs().max().to("cpu", torch.bfloat16)
    return (torch.nextafter(top, torch.tensor(float("inf"), dtype=torch.bfloat16)) - top).item()


def assert_logits(got, want, exact, what):
    diff = (got.double() - want.double()).abs().max().item()
    if exact:
        assert torch.equal(got, want), f"{what}: logits not bit-identical (max |diff| {diff:.3g})"
    else:
        ulp = bf16_ulp_at_scale(want)
        assert diff <= ulp, f"{what}: max |diff| {diff:.3g} exceeds one bf16 ulp at the logits' scale ({ulp:.3g})"


def check_report(model, arch, report, old_params):
    """Every norm layer of the arch was replaced by the expected normgen module holding the same parameters."""
    _, _, old_class, new_class, count, exact = ARCHS[arch]
    assert report.skipped == [], str(report)
    assert len(report.replaced) == count, str(report)
    for entry in report.replaced:
        assert (entry.old, entry.new, entry.bit_identical) == (old_class, new_class, exact), entry
        new = model.get_submodule(entry.name)
        assert type(new) is getattr(generated, new_class)
        for pname, p in new.named_parameters():
            assert p is old_params[f"{entry.name}.{pname}"], f"{entry.name}.{pname} is not the original Parameter"
    remaining = [type(m).__name__ for m in model.modules() if type(m).__name__ == old_class and old_class != new_class]
    assert remaining == []


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_logits_match_eager(arch, dtype):
    """Swapped models give the original's logits: bit-identical for the RMSNorm models, GPT-2 within one bf16 ulp."""
    model, ids = tiny_model(arch, dtype)
    want = logits(model, ids)
    old_params = dict(model.named_parameters())
    keys = list(model.state_dict())
    report = swap_norms(model)
    check_report(model, arch, report, old_params)
    assert list(model.state_dict()) == keys
    assert_logits(logits(model, ids), want, ARCHS[arch][5], f"{arch} {dtype}")


def recording_aot_eager(seen):
    """aot_eager (no codegen: the rest of the model rounds as in eager mode), noting the ops in the graph."""
    aot_eager = torch._dynamo.lookup_backend("aot_eager")

    def backend(graph_module, example_inputs):
        seen.update(str(node.target) for node in graph_module.graph.nodes if node.op == "call_function")
        return aot_eager(graph_module, example_inputs)

    return backend


# Under compile, each architecture in one dtype, the two dtypes taking turns: what compile adds
# (dynamo recording the custom ops, their fake implementations, the swapped modules traced) does
# not depend on the dtype, and test_logits_match_eager checks every architecture in both.
COMPILED = [
    pytest.param(arch, DTYPES[i % 2].values[0], id=f"{arch}-{DTYPES[i % 2].id}") for i, arch in enumerate(sorted(ARCHS))
]


@pytest.mark.parametrize("arch, dtype", COMPILED)
def test_logits_match_compiled(arch, dtype):
    """Under torch.compile (aot_eager) the swapped norms are normgen's custom ops and the logits match eager's."""
    model, ids = tiny_model(arch, dtype)
    want = logits(model, ids)
    swap_norms(model)
    seen = set()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=recording_aot_eager(seen))
    assert_logits(logits(compiled, ids), want, ARCHS[arch][5], f"{arch} {dtype} compiled")
    op = {"RMSNorm": "rmsnorm", "GemmaRMSNorm": "gemma_rmsnorm", "LayerNorm": "layernorm"}[ARCHS[arch][3]]
    assert f"normgen.{op}" in seen, sorted(seen)


def test_logits_under_inductor():
    """The default backend (Inductor, CPU codegen): Qwen3 with normgen's norms is no further from eager than
    Inductor's own compilation of the original model (Inductor fuses and reorders the rest of the model)."""
    model, ids = tiny_model("qwen3", torch.bfloat16)
    want = logits(model, ids)
    torch._dynamo.reset()
    own = (logits(torch.compile(model), ids).double() - want.double()).abs().max().item()
    swap_norms(model)
    torch._dynamo.reset()
    got = logits(torch.compile(model), ids)
    diff = (got.double() - want.double()).abs().max().item()
    assert diff <= max(2 * own, bf16_ulp_at_scale(want)), (diff, own)


def training_grads(model, ids):
    """Every parameter's gradient after one loss.backward() of a language-model loss."""
    model.zero_grad(set_to_none=True)
    model(ids, labels=ids).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def check_training_step(arch, device):
    """One training step of the swapped model gives the original's parameter gradients (fp32: the norms'
    backward is normgen's, everything else is the same autograd)."""
    import copy

    model, ids = tiny_model(arch, torch.float32, device)
    original = copy.deepcopy(model)
    swap_norms(model)
    want, got = training_grads(original, ids), training_grads(model, ids)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(
            got[name], want[name], rtol=2e-4, atol=2e-5, msg=lambda m, n=name: f"{arch} {n}: {m}"
        )


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma", "gpt2"])
def test_training_step_gradients(arch):
    check_training_step(arch, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_training_step_gradients_gpu(arch):
    check_training_step(arch, "cuda")


def llama_math(x, weight, eps):
    """LlamaRMSNorm's forward, as transformers writes it."""
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


class MyRMSNorm(torch.nn.Module):
    """Not a transformers class, but Llama's math: recognized by what it computes."""

    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))
        self.variance_epsilon = eps

    def forward(self, x):
        return llama_math(x, self.weight, self.variance_epsilon)


class DoubledRMSNorm(MyRMSNorm):
    """Llama's layout, other math: y = 2 * llama(x)."""

    def forward(self, x):
        return 2 * llama_math(x, self.weight, self.variance_epsilon)


class FixedEpsRMSNorm(MyRMSNorm):
    """Llama's layout, but its forward ignores its eps attribute."""

    def forward(self, x):
        return llama_math(x, self.weight, 1e-6)


class WeightlessRMSNorm(torch.nn.Module):
    def __init__(self, eps=1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + self.eps).to(x.dtype)


class ChannelRMSNorm(torch.nn.Module):
    """Llama's math over dimension 1 of (batch, channels, length): a norm of another axis than the last."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(c))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(1, keepdim=True) + self.eps)
        return self.weight.view([1, -1] + [1] * (x.dim() - 2)) * h.to(x.dtype)


def test_a_norm_of_another_dimension_is_left_alone():
    """Probed on 2-D rows, a norm over dimension 1 looked like one over the last and was swapped: the
    model then normalized the wrong axis (by up to 6.9 at 2 x 8 x 8)."""
    net = torch.nn.Sequential(ChannelRMSNorm(8))
    x = torch.randn(2, 8, 8)
    with torch.no_grad():
        want = net(x)
    report = swap_norms(net)
    assert report.replaced == [] and [s.old for s in report.skipped] == ["ChannelRMSNorm"], str(report)
    assert type(net[0]) is ChannelRMSNorm
    with torch.no_grad():
        assert torch.equal(net(x), want)


class Toy(torch.nn.Module):
    """Norm layers normgen computes, and ones it must leave alone."""

    def __init__(self, n=32):
        super().__init__()
        self.mine = MyRMSNorm(n)
        self.shared = self.mine  # one module under two names
        self.layer_no_bias = torch.nn.LayerNorm(n, bias=False)
        self.doubled = DoubledRMSNorm(n)
        self.fixed_eps = FixedEpsRMSNorm(n, eps=1e-2)
        self.weightless = WeightlessRMSNorm()
        self.no_affine = torch.nn.LayerNorm(n, elementwise_affine=False)
        self.two_dims = torch.nn.LayerNorm((2, n))
        self.group = torch.nn.GroupNorm(4, n)
        self.batch = torch.nn.BatchNorm1d(n)
        self.hooked = MyRMSNorm(n)
        self.hooked.register_forward_hook(lambda module, args, out: out)
        # transformers' Olmo2RMSNorm: w * x_hat in fp32, one rounding, no offset: neither kind
        self.olmo2 = Olmo2RMSNorm(n) if Olmo2RMSNorm is not None else None

    def forward(self, x):
        h = self.shared(self.mine(x))
        h = self.layer_no_bias(h) + self.doubled(h) + self.fixed_eps(h) + self.weightless(h) + self.no_affine(h)
        h = self.two_dims(h.reshape(-1, 2, h.shape[-1])).reshape(h.shape) + self.hooked(h)
        h = self.group(h) + self.batch(h)
        return h + self.olmo2(h) if self.olmo2 is not None else h


@pytest.mark.parametrize("dtype", DTYPES)
def test_unknown_norms_left_alone(dtype):
    toy = Toy().to(dtype).eval()
    with torch.no_grad():
        for p in toy.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(6, 32, dtype=dtype)
    with torch.no_grad():
        want = toy(x)
    before = dict(toy.named_children())
    report = swap_norms(toy)

    assert [(r.name, r.old, r.new, r.bit_identical) for r in report.replaced] == [
        ("mine", "MyRMSNorm", "RMSNorm", True),
        ("layer_no_bias", "LayerNorm", "LayerNorm", False),
    ], str(report)
    assert toy.mine is toy.shared and type(toy.mine) is generated.RMSNorm
    assert toy.layer_no_bias.bias is None and toy.layer_no_bias.weight is before["layer_no_bias"].weight
    reasons = {s.name: (s.old, s.reason) for s in report.skipped}
    expected = {
        "doubled": ("DoubledRMSNorm", "computes neither normgen's rmsnorm"),
        "fixed_eps": ("FixedEpsRMSNorm", "computes neither"),
        "weightless": ("WeightlessRMSNorm", "no `weight` parameter"),
        "no_affine": ("LayerNorm", "elementwise_affine=False"),
        "two_dims": ("LayerNorm", "2 trailing dimensions"),
        "group": ("GroupNorm", "parameters bias, weight"),
        "batch": ("BatchNorm1d", "buffers"),
        "hooked": ("MyRMSNorm", "forward hooks"),
    }
    if toy.olmo2 is not None:
        expected["olmo2"] = ("Olmo2RMSNorm", "computes neither")
    assert set(reasons) == set(expected), str(report)
    for name, (old, why) in expected.items():
        assert reasons[name][0] == old and why in reasons[name][1], (name, reasons[name])
        assert getattr(toy, name) is before[name], f"{name} was not left alone"
    with torch.no_grad():
        got = toy(x)
    torch.testing.assert_close(got, want)
    # a second call finds normgen's modules and leaves them as they are
    again = swap_norms(toy)
    assert again.replaced == [] and "it is a normgen module already" in str(again)


def test_no_transformers_needed():
    """dsl.hf works on any nn.Module without importing transformers."""
    code = (
        "import sys, torch\n"
        "from dsl.hf import swap_norms\n"
        "report = swap_norms(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)))\n"
        "assert [r.new for r in report.replaced] == ['LayerNorm'], report\n"
        "assert 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.gpu
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_logits_match_gpu(arch):
    """On CUDA in bf16 the swapped layers run normgen's Triton kernels: logits within one bf16 ulp of the
    original's (at the logits' largest magnitude), eagerly and under Inductor."""
    model, ids = tiny_model(arch, torch.bfloat16, "cuda")
    want = logits(model, ids)
    torch._dynamo.reset()
    own = (logits(torch.compile(model), ids).double() - want.double()).abs().max().item()
    old_params = dict(model.named_parameters())
    report = swap_norms(model)
    check_report(model, arch, report, old_params)
    assert_logits(logits(model, ids), want, False, f"{arch} cuda bf16")
    torch._dynamo.reset()
    got = logits(torch.compile(model), ids)
    diff = (got.double() - want.double()).abs().max().item()
    assert diff <= max(2 * own, bf16_ulp_at_scale(want)), (diff, own)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma", "gemma3", "gpt2"])
def test_mixed_dtypes_keep_the_layers_dtypes(arch):
    """fp32 norm weights with bf16 input (a mixed-precision model): where the original layer returns
    what normgen does (Gemma's norms: fp32 math, cast back; torch's LayerNorm), the swapped layer
    gives it, in bf16, with fp32 weight gradients; LlamaRMSNorm and its copies return fp32 there,
    so their swapped layers run the replaced layer's own forward for such calls (the same output and
    gradients), rather than change the model's dtypes."""
    model, _ = tiny_model(arch, torch.float32)
    names = [name for name, m in model.named_modules() if type(m).__name__ == ARCHS[arch][2]]
    xs = {name: torch.randn(3, model.get_submodule(name).weight.shape[0]).to(torch.bfloat16) for name in names}
    want = {}
    for name in names:
        layer = model.get_submodule(name)
        y = layer(xs[name])
        y.float().sum().backward()
        want[name] = (y, layer.weight.grad.clone())
        layer.weight.grad = None
    report = swap_norms(model)
    assert len(report.replaced) == len(names) and report.skipped == [], str(report)
    for name in names:
        layer, x = model.get_submodule(name), xs[name]
        if arch in ("llama", "qwen3"):
            assert want[name][0].dtype is torch.float32  # the original's output: fp32
            y = layer(x)
            y.float().sum().backward()
            assert y.dtype is torch.float32 and torch.equal(y, want[name][0]), name
            assert torch.equal(layer.weight.grad, want[name][1]), name
            assert layer(x.float()).dtype is torch.float32  # one dtype: normgen's, as before
            continue
        y = layer(x)
        y.float().sum().backward()
        assert y.dtype is torch.bfloat16 is want[name][0].dtype
        assert layer.weight.grad.dtype is torch.float32
        if arch == "gpt2":
            torch.testing.assert_close(y, want[name][0])
            torch.testing.assert_close(layer.weight.grad, want[name][1], rtol=1.6e-2, atol=1e-2)
        else:
            assert torch.equal(y, want[name][0]), name
            torch.testing.assert_close(layer.weight.grad, want[name][1], rtol=1.6e-2, atol=1e-2)


class GatedRMSNorm(MyRMSNorm):
    """Mamba2's gated RMSNorm (transformers' MambaRMSNormGated): Llama's math where gate is None."""

    def forward(self, hidden_states, gate=None):
        dtype = hidden_states.dtype
        h = hidden_states.to(torch.float32)
        if gate is not None:
            h = h * torch.nn.functional.silu(gate.to(torch.float32))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(dtype)


def test_a_norm_whose_forward_takes_more_than_its_input_is_left_alone():
    """A gated norm passed the probe (gate=None is Llama's math) and was swapped; the model's call
    norm(h, gate) then failed. Its forward's signature now leaves it alone, with the reason."""
    model = torch.nn.Sequential(GatedRMSNorm(16))
    report = swap_norms(model)
    assert report.replaced == [] and isinstance(model[0], GatedRMSNorm)
    assert "its forward takes `gate` besides the input" in report.skipped[0].reason


def test_a_norm_whose_eps_is_beyond_fp32_is_left_alone():
    """normgen's ops refuse an eps above fp32's largest number (the kernels add it in fp32); the probe
    built its module with one and failed. Such a norm is now left alone, with the reason."""
    largest = float(np.finfo(np.float32).max)
    model = torch.nn.Sequential(MyRMSNorm(16, eps=1e39), MyRMSNorm(16, eps=largest), MyRMSNorm(16, eps=10**400))
    report = swap_norms(model)  # (an int beyond any float: it raised OverflowError)
    assert [r.name for r in report.replaced] == ["1"], str(report)
    reasons = [s.reason for s in report.skipped]
    rule = f"(normgen: a finite number >= 0 within fp32's range (at most {largest!r}"
    assert reasons[0].startswith("eps got 1e+39 " + rule), reasons
    assert reasons[1].startswith("eps got a number too large for a float (int) " + rule), reasons
    assert isinstance(model[0], MyRMSNorm) and isinstance(model[2], MyRMSNorm)


@pytest.mark.parametrize("hook", ["backward", "backward_pre", "state_dict", "load_state_dict_post"])
def test_a_norm_with_hooks_of_any_kind_is_left_alone(hook):
    """Backward and state_dict hooks were dropped by the swap silently (only forward hooks were seen)."""
    layer = transformers.models.llama.modeling_llama.LlamaRMSNorm(16)
    register = {
        "backward": lambda: layer.register_full_backward_hook(lambda *a: None),
        "backward_pre": lambda: layer.register_full_backward_pre_hook(lambda *a: None),
        "state_dict": lambda: layer.register_state_dict_post_hook(lambda *a: None),
        "load_state_dict_post": lambda: layer.register_load_state_dict_post_hook(lambda *a: None),
    }
    register[hook]()
    model = torch.nn.Sequential(layer)
    report = swap_norms(model)
    assert report.replaced == [] and model[0] is layer
    assert f"it has {hook.replace('_', ' ')} hooks" in report.skipped[0].reason


@pytest.mark.parametrize("kind", ["llama", "gemma"])  # (torch's LayerNorm refuses such a call itself)
def test_fp32_input_with_a_half_weight_runs_the_replaced_layer(kind):
    """Mamba's residual_in_fp32 feeds its final norm fp32 rows with a bf16 weight; LlamaRMSNorm returns
    fp32 there. The swapped layer refused the call (and casting the model did not help); it now runs
    the replaced layer's forward, which gives the same output."""
    make, new = {
        "llama": (transformers.models.llama.modeling_llama.LlamaRMSNorm, generated.RMSNorm),
        "gemma": (transformers.models.gemma.modeling_gemma.GemmaRMSNorm, generated.GemmaRMSNorm),
    }[kind]
    layer = make(16).to(torch.bfloat16)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(16))
    x = torch.randn(3, 16)
    want = layer(x)
    model = torch.nn.Sequential(layer)
    assert len(swap_norms(model).replaced) == 1 and isinstance(model[0], new)
    got = model(x)
    assert got.dtype is want.dtype is torch.float32 and torch.equal(got, want)
    assert len(list(model.modules())) == 2 and set(model.state_dict()) == {f"0.{k}" for k in layer.state_dict()}
