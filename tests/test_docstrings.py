"""Generated docstrings describe what the spec has, and nothing it does not.

An op with one residual mode documents that mode only; an op without a
residual never speaks of s or norm_pos; modules say how their dtype is chosen.
"""

import ast
import importlib
import re

import torch

import generated
from dsl import pipeline
from dsl.op_view import op_plan
from dsl.render import render_op

PRE_ONLY = """
op pre_norm {
    norm     = rms
    residual = pre
    store    = residual
    targets  = cuda
}
"""

POST_ONLY_INT8 = """
op post_norm_int8 {
    norm     = layer
    residual = post
    bias     = shift
    quantize = int8
    targets  = cuda
}
"""


def docstrings(spec_text: str) -> dict[str, str]:
    """Docstrings of the generated op module (key ""), its functions and classes, from a spec's text."""
    (spec,) = pipeline.load_text(spec_text, "specs/test.norm")
    tree = ast.parse(render_op(op_plan(spec, "test")))
    found = {"": ast.get_docstring(tree)}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = ast.get_docstring(node) or ""
    return found


def test_pre_only_op_documents_pre_and_not_post():
    docs = docstrings(PRE_ONLY)
    op = docs["pre_norm"]
    assert op.startswith("Over the last dimension of x: y = s / sqrt(mean(s^2) + eps) * w, where s = x + residual.")
    assert 'norm_pos: "pre" (this op\'s only mode).\n' in op
    assert "pre: s = x + residual; returns norm(s) and s." in op
    assert "pre mode puts s in residual and the output in x." in op
    for text in docs.values():
        assert not re.search(r"\bpost\b", text), text


def test_post_only_quantized_op_documents_post_and_not_pre():
    docs = docstrings(POST_ONLY_INT8)
    op = docs["post_norm_int8"]
    assert "post: returns norm(x + residual) and, as the residual out, the unquantized norm in x's dtype." in op
    assert "post mode puts the unquantized output in x." in op
    assert "q, residual_out, scale" in op
    for text in docs.values():
        assert not re.search(r"\bpre\b", text), text


def test_rmsnorm_has_no_residual_words():
    """rmsnorm has no residual: its docs are in x, with no s, norm_pos or in-place mode."""
    texts = [generated.rmsnorm.__doc__, generated.RMSNorm.__doc__, importlib.import_module("generated.rmsnorm").__doc__]
    assert generated.rmsnorm.__doc__.startswith("Over the last dimension of x: y = x / sqrt(mean(x^2) + eps) * w.")
    for text in texts:
        assert "residual" not in text and "norm_pos" not in text and "inplace" not in text, text
        assert " s " not in text and "(s" not in text and "s =" not in text, text


def test_both_modes_are_documented_where_the_spec_has_both():
    doc = generated.add_rmsnorm.__doc__
    assert 'norm_pos: "pre" or "post".\n' in doc
    assert "pre: s = x + residual; returns norm(s) and s." in doc
    assert "post: returns norm(x + residual) and, as the residual out, that same tensor." in doc
    assert "pre mode puts s in residual and the output in x, post mode puts the output in x." in doc


def test_module_docstring_says_how_its_dtype_is_chosen():
    doc = " ".join(generated.AddRMSNorm.__doc__.split())
    assert "device= and dtype=" in doc and "torch's default dtype (fp32)" in doc
    # and what the op takes, as it does: fp32 parameters with bf16 input, output in x's dtype
    assert "in fp32 with fp16/bf16 input (the output then in x's dtype" in doc
    x = torch.randn(2, 8).bfloat16()
    y, _ = generated.AddRMSNorm(8)(x, x)
    assert generated.AddRMSNorm(8).weight.dtype is torch.float32 and y.dtype is torch.bfloat16
