"""Stage 1 and 2: spec text -> syntax tree -> NormSpec, for good specs."""

from dataclasses import replace
from pathlib import Path

import pytest

from dsl.check import check, check_names
from dsl.model import Bias, DType, NormKind, ResidualMode, Span, Store, Target, Weight, WeightKind
from dsl.parse import parse
from dsl.pipeline import SPECS, load_specs, load_text
from dsl.resolve import resolve

SHIPPED = sorted(SPECS.glob("*.norm"))


def test_there_are_shipped_specs():
    assert any(path.name == "add_rmsnorm.norm" for path in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_spec_parses_resolves_and_checks(path: Path):
    text = path.read_text(encoding="utf-8")
    syntax = parse(text, path.name)
    specs, errors = resolve(syntax)
    assert errors == []
    assert len(specs) == len(syntax.ops) >= 1
    for spec in specs:
        assert check(spec) == []
        assert spec.path == path.name


def test_shipped_specs_load_together():
    specs = load_specs(SPECS)
    assert check_names(specs) == []
    assert "add_rmsnorm" in {spec.name for spec in specs}
    assert {spec.path for spec in specs} == {f"dsl/specs/{path.name}" for path in SHIPPED}  # repo-relative


def test_add_rmsnorm_says_what_the_seed_kernel_does():
    (spec,) = load_text((SPECS / "add_rmsnorm.norm").read_text(encoding="utf-8"), "add_rmsnorm.norm")
    assert spec.norm is NormKind.RMS
    assert spec.residual == (ResidualMode.PRE, ResidualMode.POST)
    assert spec.weight == Weight(WeightKind.SCALE)
    assert spec.bias is Bias.NONE
    assert spec.store == (Store.RESIDUAL, Store.RSTD)
    assert spec.dtypes == (DType.FP32, DType.FP16, DType.BF16)
    assert spec.targets == (Target.NPU, Target.CUDA)
    assert spec.eps == 1e-6


POSITIONS = """\
op demo {
    norm     = rms
    residual = pre,  post
    weight   = scale + 1.0
    eps      = 1e-6
}
"""


def test_syntax_tree_keeps_positions():
    (op,) = parse(POSITIONS, "demo.norm").ops
    assert op.name == "demo"
    assert op.name_span == Span("demo.norm", 1, 4, 1, 8)
    assert op.span.line == 1 and op.span.end_line == 6
    norm, residual, weight, eps = op.settings
    assert (norm.key, norm.key_span) == ("norm", Span("demo.norm", 2, 5, 2, 9))
    assert norm.span == Span("demo.norm", 2, 5, 2, 19)
    (rms,) = norm.values
    assert (rms.kind, rms.word, rms.span) == ("word", "rms", Span("demo.norm", 2, 16, 2, 19))
    pre, post = residual.values
    assert pre.span == Span("demo.norm", 3, 16, 3, 19)
    assert post.span == Span("demo.norm", 3, 22, 3, 26)
    (offset,) = weight.values
    assert (offset.kind, offset.word, offset.number, offset.text) == ("offset", "scale", 1.0, "scale + 1.0")
    assert offset.span == Span("demo.norm", 4, 16, 4, 27)
    (number,) = eps.values
    assert (number.kind, number.number, number.text) == ("number", 1e-6, "1e-6")
    assert number.span == Span("demo.norm", 5, 16, 5, 20)


def test_model_keeps_setting_positions():
    (spec,) = load_text(POSITIONS, "demo.norm")
    assert spec.span("op") == Span("demo.norm", 1, 4, 1, 8)
    assert spec.span("weight") == Span("demo.norm", 4, 5, 4, 27)
    # A setting left to its default points at the op's name.
    assert spec.span("store") == spec.span("op")


def test_comments_and_newlines_carry_no_meaning():
    spaced = """\
# a comment before anything

op demo   # a comment after the name
{
    norm = rms   # the kind
    # a comment line inside
    residual =
        pre,
        post

    weight = scale
    +
    1.0
}
# a comment at the end, with no newline after it"""
    one_line = "op demo { norm = rms residual = pre, post weight = scale + 1.0 }"
    (spaced_spec,) = load_text(spaced, "a.norm")
    (one_line_spec,) = load_text(one_line, "a.norm")
    assert replace(spaced_spec, spans=()) == replace(one_line_spec, spans=())
    assert spaced_spec.span("weight").line == 11


def test_comment_only_and_empty_files_hold_no_ops():
    assert parse("", "a.norm").ops == ()
    assert parse("# nothing here\n\n   \n", "a.norm").ops == ()


def test_several_ops_per_file():
    text = """\
op first { norm = rms }

op second {
    norm = layer
    bias = shift
}
op third { norm = rms residual = post }
"""
    specs = load_text(text, "many.norm")
    assert [spec.name for spec in specs] == ["first", "second", "third"]
    assert [spec.norm for spec in specs] == [NormKind.RMS, NormKind.LAYER, NormKind.RMS]
    assert specs[1].bias is Bias.SHIFT
    assert specs[2].residual == (ResidualMode.POST,)
    assert [spec.span("op").line for spec in specs] == [1, 3, 7]


def test_defaults_fill_what_a_spec_leaves_out():
    rms, layer = load_text("op a { norm = rms } op b { norm = layer }", "d.norm")
    assert rms.eps == 1e-6 and layer.eps == 1e-5
    assert rms.residual == () and rms.store == ()
    assert rms.weight == Weight(WeightKind.SCALE)
    assert rms.dtypes == (DType.FP32, DType.FP16, DType.BF16)
    assert rms.targets == (Target.NPU, Target.CUDA)


def test_only_the_word_op_itself_is_reserved():
    specs = load_text("op opt { norm = rms } op op_x { norm = rms }", "o.norm")
    assert [spec.name for spec in specs] == ["opt", "op_x"]
