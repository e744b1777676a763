"""A norm kind added the documented way (README, "How it is built"): its two files and one word.

The test copies the generator (``dsl/`` and ``build.py``) into a temporary folder,
adds a toy kind there (the L2 norm, y = s / sqrt(sum(s^2) + eps) * w: rms without
the mean's 1/n) as ``dsl/kinds/l2.py`` and ``dsl/kinds/l2.jinja``, registers it
with one word in ``dsl/kinds/__init__.py``, and checks that nothing else of the
copy differs from the shipped generator. The copy then builds specs that use it
into a package of their own, and a fresh process runs that package's kernels
on CPU in Triton's interpreter (cuda kernels): forward and backward, single and
multi pass, against an independent float64 formula differentiated by torch
autograd, and the generated PyTorch reference likewise. The op's reference is
swapped for one that raises, so the kernels, not the reference, must answer.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

REGISTRY_LINE = 'NAMES = ("rms", "layer")'
REGISTERED_LINE = 'NAMES = ("rms", "layer", "l2")'

KIND_PY = '''"""A toy kind: the L2 norm, y = x / sqrt(sum(x^2) + eps)."""

from . import Kind, Refusal

KIND = Kind(
    name="l2",
    noun="an L2 norm",
    default_eps=1e-12,
    has_mean=False,
    formula="{v} / sqrt(sum({v}^2) + eps)",
    eps_added_to="sum of squares",
    first_pass_sums="the sums of squares",
    statistics_passes=1,
    refusals=(
        Refusal(
            "bias",
            lambda spec: spec.has_bias,
            "bias = shift is not allowed with norm = l2",
            "the toy L2 kind has no bias; write `bias = none`",
        ),
    ),
)
'''

# rstd = 1 / sqrt(sum(s^2) + eps); with g = dy * w and c1 = sum(g * x_hat): dx = rstd * (g - x_hat * c1)
KIND_JINJA = """{% import "kernel_macros.jinja" as m %}

{% macro statistics_single(f) -%}
rstd = tl.math.rsqrt(tl.sum(s * s, axis=1) + eps)
{%- endmacro %}

{% macro statistics_multi(f, readback, hint) -%}
acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
{% call m.stats_pass(f, readback, True, hint) %}
acc += s * s
{% endcall %}
rstd = tl.math.rsqrt(tl.sum(acc, axis=1) + eps)
{%- endmacro %}

{% macro x_hat(f, rounded) -%}
{% if rounded %}
x_hat = (s * rstd[:, None]).to(dtype).to(tl.float32)
{% else %}
x_hat = s * rstd[:, None]
{% endif %}
{%- endmacro %}

{% macro backward_terms_single(f) -%}
c1 = tl.sum(g * x_hat, axis=1)
{%- endmacro %}

{% macro backward_terms_multi(f, hint) -%}
# pass 1: c1 = sum(g * x_hat) over the row, in fp32
acc1 = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
{% call m.backward_pass(f, hint) %}
acc1 += g * x_hat
{% endcall %}
c1 = tl.sum(acc1, axis=1)
{%- endmacro %}

{% macro backward_dx(f) -%}
dx = (g - x_hat * c1[:, None]) * rstd[:, None]
{%- endmacro %}

{% macro reference_statistics(f) -%}
rstd = torch.rsqrt(s.square().sum(dim=-1, keepdim=True) + eps)
{%- endmacro %}

{% macro reference_x_hat(f, rounded) -%}
{% if rounded %}
x_hat = (s * rstd).to(dtype).float()
{% else %}
x_hat = s * rstd
{% endif %}
{%- endmacro %}
"""

SPECS = """
op l2norm {
    norm     = l2
    residual = pre, post
    casting  = llama
    weight   = scale + 0.5
    store    = residual, rstd
    dtypes   = fp32, bf16
    targets  = npu, cuda
    eps      = 1e-6
}

op l2norm_plain {
    norm     = l2
    casting  = none
    weight   = none
    dtypes   = fp32, fp16
    targets  = cuda
}
"""

BAD_SPEC = """
op l2_biased {
    norm  = l2
    bias  = shift
    store = mean
}
"""

# Runs in a fresh process (TRITON_INTERPRET=1 before triton is imported) with the copy first on sys.path.
RUN = r'''
import importlib, json, sys
import torch

import l2ops
from dsl import runtime

assert runtime.INTERPRET and runtime.__file__.startswith(sys.argv[1]), runtime.__file__
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def formula(s, w, eps):
    """float64: s / sqrt(sum(s^2) + eps) * (w + 0.5) (written here from the definition)."""
    y = s / torch.sqrt(s.square().sum(-1, keepdim=True) + eps)
    return y * (w + 0.5) if w is not None else y


def worst(got, want):
    return ((got.double() - want).abs().max() / want.abs().max().clamp(min=1e-30)).item()


def refuse(*args):
    raise AssertionError("the op ran its reference, not its kernels")


report = []
for name, has_residual, has_weight, dtypes in (
    ("l2norm", True, True, (torch.float32, torch.bfloat16)),
    ("l2norm_plain", False, False, (torch.float32, torch.float16)),
):
    op = getattr(l2ops, name)
    kernels = importlib.import_module(f"l2ops.{name}_cuda")
    reference = getattr(importlib.import_module(f"l2ops.{name}_reference"), f"{name}_reference")
    module = importlib.import_module(f"l2ops.{name}")
    module.OP.reference = refuse
    for dtype in dtypes:
        key = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
        fwd_multi = min(e.cols_lo for e in kernels.TABLE.entries if e.passes == "multi" and e.dtype == key) + 7
        bwd_multi = min(e.cols_lo for e in kernels.BACKWARD_TABLE.entries if e.passes == "multi" and e.dtype == key)
        for width in (111, 64, bwd_multi + 9, fwd_multi):
            for mode in ("pre", "post") if has_residual else (None,):
                g = torch.Generator().manual_seed(width)
                x = torch.randn(3, width, generator=g).to(dtype).requires_grad_()
                leaves = [x]
                kwargs = {"eps": 1e-6}
                if has_residual:
                    r = torch.randn(3, width, generator=g).to(dtype).requires_grad_()
                    leaves.append(r)
                    kwargs["norm_pos"] = mode
                if has_weight:
                    w = (0.5 + 0.5 * torch.randn(width, generator=g)).to(dtype).requires_grad_()
                    leaves.append(w)
                s64 = ((x.detach().double() + r.detach().double()).to(dtype) if has_residual else x.detach()).double()
                s64.requires_grad_()
                w64 = w.detach().double().requires_grad_() if has_weight else None
                want = formula(s64, w64, 1e-6)
                gy = torch.randn(3, width, generator=g).to(dtype)
                want_grads = torch.autograd.grad(want, [s64] + ([w64] if has_weight else []), gy.double())
                for path in ("kernels", "reference"):
                    args = [x] + ([r] if has_residual else []) + ([w] if has_weight else [])
                    if path == "kernels":
                        out = op(*args, **kwargs)
                    else:
                        out = reference(*args, **kwargs)
                    y = out[0] if isinstance(out, tuple) else out
                    grads = torch.autograd.grad(y, leaves, gy)
                    errors = {"y": worst(y, want), "dx": worst(grads[0], want_grads[0])}
                    if has_residual:
                        errors["dr"] = worst(grads[1], want_grads[0])
                    if has_weight:
                        errors["dw"] = worst(grads[-1], want_grads[1])
                    bad = {k: v for k, v in errors.items() if not v <= TOL[dtype]}
                    report.append([name, key, width, mode, path, errors])
                    assert not bad, (name, key, width, mode, path, errors)
print(json.dumps(report))
'''


# The kind's macros, as dsl/kinds/__init__.py lists them.
CONTRACT = {
    "statistics_single",
    "statistics_multi",
    "x_hat",
    "backward_terms_single",
    "backward_terms_multi",
    "backward_dx",
    "reference_statistics",
    "reference_x_hat",
}


def test_the_shared_templates_call_the_kinds_macros_and_every_kind_has_them():
    from dsl import render
    from dsl.kinds import KINDS

    called = set()
    for template in ("kernel_macros.jinja", "backward_macros.jinja", "reference.py.jinja"):
        called |= set(re.findall(r"\bkind\.(\w+)\(", (render.TEMPLATES / template).read_text()))
    assert called == CONTRACT
    for kind in KINDS.values():
        module = render._ENV.get_template(kind.template).module
        assert {name for name in CONTRACT if callable(getattr(module, name, None))} == CONTRACT, kind.name


def _dsl_files(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p for p in (root / "dsl").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    """A copy of the generator with the L2 kind added: two new files and one changed line."""
    root = tmp_path_factory.mktemp("newkind")
    shutil.copytree(ROOT / "dsl", root / "dsl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "build.py", root / "build.py")
    (root / "dsl" / "kinds" / "l2.py").write_text(KIND_PY)
    (root / "dsl" / "kinds" / "l2.jinja").write_text(KIND_JINJA)
    registry = root / "dsl" / "kinds" / "__init__.py"
    text = registry.read_text()
    assert text.count(REGISTRY_LINE) == 1
    registry.write_text(text.replace(REGISTRY_LINE, REGISTERED_LINE))
    return root


def _run(args, cwd, env=None, timeout=900):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_copy_differs_only_by_the_kind_files_and_one_line(copy):
    shipped, added = _dsl_files(ROOT), _dsl_files(copy)
    assert sorted(set(added) - set(shipped)) == ["dsl/kinds/l2.jinja", "dsl/kinds/l2.py"]
    assert set(shipped) <= set(added)
    changed = [name for name in shipped if not filecmp.cmp(shipped[name], added[name], shallow=False)]
    assert changed == ["dsl/kinds/__init__.py"]
    old, new = shipped[changed[0]].read_text().splitlines(), added[changed[0]].read_text().splitlines()
    assert len(old) == len(new) and sum(a != b for a, b in zip(old, new, strict=True)) == 1


def test_the_kind_refuses_what_its_descriptor_says(copy):
    (copy / "bad").mkdir(exist_ok=True)
    (copy / "bad" / "bad.norm").write_text(BAD_SPEC)
    result = _run(["build.py", "--specs", "bad", "--out", "bad_out"], copy)
    assert result.returncode == 2, result.stderr
    assert "error: bias = shift is not allowed with norm = l2" in result.stderr
    assert "hint: the toy L2 kind has no bias; write `bias = none`" in result.stderr
    # the rule every kind without a mean gets, with the kind's noun
    assert "error: store = mean needs norm = layer" in result.stderr
    assert "hint: an L2 norm computes no mean; drop `mean` from store" in result.stderr


def test_the_kind_builds_and_its_kernels_match_the_formula(copy):
    (copy / "specs").mkdir(exist_ok=True)
    (copy / "specs" / "l2.norm").write_text(SPECS)
    result = _run(["build.py", "--specs", "specs", "--out", "l2ops"], copy)
    assert result.returncode == 0, result.stderr
    op_text = (copy / "l2ops" / "l2norm.py").read_text()
    assert "y = s / sqrt(sum(s^2) + eps) * (w + 0.5), where s = x + residual" in op_text
    assert "eps: added to the sum of squares before the square root." in op_text
    kernel_text = (copy / "l2ops" / "l2norm_cuda.py").read_text()
    assert "rstd = tl.math.rsqrt(tl.sum(s * s, axis=1) + eps)" in kernel_text
    assert "c1 = tl.sum(acc1, axis=1)\n" in kernel_text
    assert (copy / "l2ops" / "l2norm_npu.py").exists()

    env = {**os.environ, "TRITON_INTERPRET": "1", "NORMGEN_INTERPRET_TARGET": "cuda", "PYTHONPATH": str(copy)}
    result = _run(["-c", RUN, str(copy)], copy, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # every case ran on both paths: 2 dtypes x 4 widths x 2 modes (l2norm), 2 x 4 (l2norm_plain)
    assert len(report) == 2 * (2 * 4 * 2 + 2 * 4)
