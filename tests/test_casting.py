"""The casting modes (llama, gemma, none) are told apart, one rounding step at a time.

Six specs written here (RMS and Layer norm × the three modes) are built into a
package of their own. For fp16 and bf16 each op's output must equal the
emulated rounding steps of its own mode almost everywhere (never more than one
step away), and must visibly differ from the other two modes' steps on the same
inputs. Deleting one rounding step from a template breaks the first check;
a bf16 rounding that is off by one ulp breaks it too (the emulation knows that
both Triton interpreters truncate fp32 -> bf16, where hardware rounds to nearest
even, so no tolerance is widened for it).
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

import build
from dsl import pipeline, runtime

from .oracle import assert_steps_match, exact_fraction, rounder, stepwise

PACKAGE = "normgen_casting_specs"
MODES = ("llama", "gemma", "none")
SPEC_TEXT = "\n".join(
    f"""
op {kind}_{mode} {{
    norm     = {kind}
    residual = pre
    casting  = {mode}
    weight   = scale
    bias     = {"shift" if kind == "layer" else "none"}
    dtypes   = fp16, bf16
    targets  = npu, cuda
}}
"""
    for kind in ("rms", "layer")
    for mode in MODES
)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("casting")
    spec_dir = root / "specs"
    spec_dir.mkdir()
    (spec_dir / "casting.norm").write_text(SPEC_TEXT)
    assert build.main(["--specs", str(spec_dir), "--out", str(root / PACKAGE)]) == 0
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE), {s.name: s for s in pipeline.load_specs(spec_dir)}
    finally:
        sys.path.remove(str(root))


def check_modes_apart(package, kind, mode, dtype, width, device, interpreter, params=None):
    """``params``: the weight's and bias's dtype (None: x's); fp32 ones enter each mode's steps unrounded."""
    module, specs = package
    spec = specs[f"{kind}_{mode}"]
    generator = torch.Generator().manual_seed(width)
    x = torch.randn(8, width, generator=generator).to(device=device, dtype=dtype)
    residual = torch.randn(8, width, generator=generator).to(device=device, dtype=dtype)
    # weights far from 1, so that rounding before or after the multiplication differs
    weight = (1.0 + 2.0 * torch.rand(width, generator=generator)).to(device=device, dtype=params or dtype)
    bias = (0.5 * torch.randn(width, generator=generator)).to(device=device, dtype=params or dtype)
    args = dict(x=x, residual=residual, weight=weight, bias=bias if spec.has_bias else None)
    op_args = {k: v for k, v in args.items() if v is not None}
    y, s = getattr(module, spec.name)(**op_args, norm_pos="pre")
    rnd = rounder(dtype, interpreter)
    expected = {m: stepwise(spec, m, **args, rnd=rnd) for m in MODES}
    label = f"{spec.name} {dtype} ({params or dtype} params) width {width}"
    assert torch.equal(s, expected[mode][1]), f"{label}: residual sum differs from x + r rounded once"
    assert_steps_match(y, expected[mode][0], f"{label}: y vs its own rounding steps", expected[mode][2])
    for other in MODES:
        if other == mode:
            continue
        apart = 1.0 - exact_fraction(expected[other][0], expected[mode][0])
        assert apart > 0.05, f"{label}: the inputs do not separate {mode} from {other} ({apart:.1%} differ)"
        assert exact_fraction(y, expected[other][0]) < 0.95, f"{label}: y matches {other}'s rounding steps"


PARAMS = pytest.mark.parametrize("params", [None, torch.float32], ids=["params-x", "params-fp32"])


@pytest.mark.skipif(not runtime.INTERPRET, reason="needs TRITON_INTERPRET=1 (the CPU interpreter)")
@PARAMS
@pytest.mark.parametrize("width", [128, 4097])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_casting_modes_apart_interpreter(package, kind, mode, dtype, width, params):
    check_modes_apart(package, kind, mode, dtype, width, "cpu", interpreter=True, params=params)


@pytest.mark.gpu
@PARAMS
@pytest.mark.parametrize("width", [128, 4097, 8192])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_casting_modes_apart_gpu(package, kind, mode, dtype, width, params):
    check_modes_apart(package, kind, mode, dtype, width, "cuda", interpreter=False, params=params)


@PARAMS
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("mode", MODES)
def test_casting_modes_apart_reference(package, monkeypatch, mode, dtype, params):
    """The generated PyTorch reference (CPU without the interpreter) follows the same steps."""
    monkeypatch.setattr(runtime, "INTERPRET", False)
    for kind in ("rms", "layer"):
        check_modes_apart(package, kind, mode, dtype, 300, "cpu", interpreter=False, params=params)
