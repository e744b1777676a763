"""Specs written only here, built with `build.py --specs DIR --out DIR`, checked like the shipped ones.

They cover combinations that no shipped spec uses, so a concept that works only
in the shipped combinations fails here. The kernels run in the interpreter of
the target NORMGEN_INTERPRET_TARGET names (cuda by default, npu under triton-ascend).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import sys

import pytest
import torch

import build
from dsl import pipeline, runtime

from .cases import rows_for
from .test_numerics import check_case

PACKAGE = "normgen_user_specs"

SPECS_TEXT = {
    "combos.norm": """
# LayerNorm with no affine part, every step in the input dtype, post mode only
op plain_layer_post {
    norm     = layer
    residual = post
    casting  = none
    weight   = none
    store    = mean, rstd
    dtypes   = fp16, fp32
    targets  = npu, cuda
}

# RMSNorm with an offset weight kept in the input dtype, pre mode only
op offset_rms_pre {
    norm     = rms
    residual = pre
    casting  = none
    weight   = scale + 0.5
    store    = residual, rstd
    dtypes   = bf16, fp32
    targets  = npu, cuda
    eps      = 1e-5
}

# int8 output straight from an RMSNorm with no weight and no residual
op rms_int8_plain {
    norm     = rms
    weight   = none
    quantize = int8
    dtypes   = fp32, bf16
    targets  = npu, cuda
}

# fp8 output from a LayerNorm with a bias, llama rounding, no residual
op layer_fp8_llama {
    norm     = layer
    casting  = llama
    bias     = shift
    store    = rstd
    quantize = fp8_e4m3
    dtypes   = fp16
    targets  = npu, cuda
}

# gemma rounding without a weight, post then pre
op gemma_unweighted {
    norm     = rms
    residual = post, pre
    casting  = gemma
    weight   = none
    store    = rstd
    dtypes   = bf16
    targets  = npu, cuda
}
""",
}

WIDTHS = (111, 2048, 7338)


@contextlib.contextmanager
def _built(root, package: str, texts: dict[str, str]):
    """The package ``package`` built under ``root`` from spec files (name -> text), imported with
    ``root`` on sys.path for the duration: (the module, the spec folder)."""
    spec_dir = root / "specs"
    spec_dir.mkdir()
    for name, text in texts.items():
        (spec_dir / name).write_text(text)
    assert build.main(["--specs", str(spec_dir), "--out", str(root / package)]) == 0
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(package), spec_dir
    finally:
        sys.path.remove(str(root))


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    with _built(tmp_path_factory.mktemp("user"), PACKAGE, SPECS_TEXT) as (module, spec_dir):
        yield module, {spec.name: spec for spec in pipeline.load_specs(spec_dir)}


def cases():
    specs = {}
    for text in SPECS_TEXT.values():
        specs.update({s.name: s for s in pipeline.load_text(text, "combos.norm")})
    for name, spec in sorted(specs.items()):
        modes = [m.value for m in spec.residual] or [None]
        combos = [
            (dtype, mode, width, rows)
            for dtype, mode, width in itertools.product(spec.dtypes, modes, WIDTHS)
            for rows in rows_for(spec, width)
        ]
        for i, (dtype, mode, width, rows) in enumerate(combos):
            layout = ("2d", "3d", "strided")[i % 3]
            yield pytest.param(
                name, dtype.value, mode, width, rows, layout, id=f"{name}-{dtype.value}-{mode}-{width}-{rows}"
            )


def test_user_package_exports_ops_and_modules(package):
    module, specs = package
    for name in specs:
        assert callable(getattr(module, name))
    assert module.PlainLayerPost.__name__ == "PlainLayerPost"


@pytest.mark.skipif(
    not runtime.INTERPRET,
    reason="TRITON_INTERPRET is not 1 (with a GPU, conftest leaves it off; set it to run these on CPU)",
)
@pytest.mark.parametrize("name, dtype, mode, width, rows, layout", list(cases()))
def test_user_spec_numerics(package, name, dtype, mode, width, rows, layout):
    module, specs = package
    check_case(name, dtype, mode, width, rows, layout, "cpu", False, spec=specs[name], package=module)


# Layer norms that store rstd alone: the backward saves the mean too, so a call that needs a gradient
# asks the kernels for both while the caller asked for rstd only.
RSTD_ONLY = """
op ln_rstd_only {
    norm    = layer
    bias    = shift
    store   = rstd
    dtypes  = fp32
    targets = npu, cuda
}
op add_ln_rstd_only {
    norm     = layer
    residual = pre, post
    store    = rstd
    dtypes   = fp32
    targets  = npu, cuda
}
"""


@pytest.fixture(scope="module")
def rstd_only(tmp_path_factory):
    with _built(tmp_path_factory.mktemp("rstd_only"), "normgen_rstd_only", {"rstd_only.norm": RSTD_ONLY}) as built:
        yield built[0]


@pytest.mark.parametrize("mode", [None, "pre", "post"])
def test_user_spec_rstd_under_compile_with_a_gradient(rstd_only, mode, cpu_path):
    """torch.compile of a call that needs a gradient and asks for rstd returns rstd, not the mean that
    the backward saves beside it (it did: the compiled entry skipped the mean only for ops that store it)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 64, generator=generator) * 2 + 3  # rows whose mean is nothing like their rstd
    r, w, b = torch.randn(3, 64, generator=generator), torch.randn(64, generator=generator), torch.randn(64)
    if mode is None:
        args, kwargs, call = (x, w, b), {}, rstd_only.ln_rstd_only
    else:
        args, kwargs, call = (x, r, w), {"norm_pos": mode}, rstd_only.add_ln_rstd_only
    s = x + r if mode else x
    expected = torch.rsqrt(s.var(-1, unbiased=False) + 1e-5)

    def f(*tensors):
        return call(*tensors, return_rstd=True, **kwargs)

    eager = f(*[t.clone().requires_grad_() for t in args])
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)(*[t.clone().requires_grad_() for t in args])
    torch.testing.assert_close(eager[-1], expected)
    assert len(compiled) == len(eager)
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=0, atol=0)
