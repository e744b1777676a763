"""The model round trip: format_spec(resolve(parse(text))) == text for canonical texts."""

from dataclasses import replace
from pathlib import Path

import pytest

from dsl.model import NormSpec, Weight, WeightKind, format_number, format_spec
from dsl.pipeline import SPECS, load_text

CANONICAL = {
    "layer_norm_bias_all_stores": """\
op add_layernorm {
    norm       = layer
    residual   = pre, post
    accumulate = fp32
    casting    = gemma
    weight     = scale
    bias       = shift
    store      = residual, mean, rstd
    quantize   = none
    dtypes     = fp32, fp16, bf16
    targets    = npu, cuda
    eps        = 1e-5
    backward   = kernels
}
""",
    "rms_no_weight_int8_single_lists": """\
op rmsnorm_int8 {
    norm       = rms
    residual   = none
    accumulate = fp32
    casting    = none
    weight     = none
    bias       = none
    store      = none
    quantize   = int8
    dtypes     = fp16
    targets    = cuda
    eps        = 1e-6
    backward   = none
}
""",
    "gemma_offset_fp8_post": """\
op gemma_post_fp8 {
    norm       = rms
    residual   = post
    accumulate = fp32
    casting    = gemma
    weight     = scale + 1.0
    bias       = none
    store      = rstd
    quantize   = fp8_e4m3
    dtypes     = bf16
    targets    = npu
    eps        = 1e-6
    backward   = none
}
""",
    "llama_pre_residual_rstd": """\
op add_rmsnorm {
    norm       = rms
    residual   = pre
    accumulate = fp32
    casting    = llama
    weight     = scale + 0.5
    bias       = none
    store      = residual, rstd
    quantize   = none
    dtypes     = bf16, fp32
    targets    = cuda, npu
    eps        = 1e-12
    backward   = kernels
}
""",
    "layer_no_weight_mean_only": """\
op layernorm_plain {
    norm       = layer
    residual   = post, pre
    accumulate = fp32
    casting    = none
    weight     = none
    bias       = none
    store      = mean
    quantize   = none
    dtypes     = fp32
    targets    = npu, cuda
    eps        = 0.001
    backward   = none
}
""",
}


def load_one(text: str, path: str = "spec.norm") -> NormSpec:
    (spec,) = load_text(text, path)
    return spec


def bare(spec: NormSpec) -> NormSpec:
    """The model without where it was written."""
    return replace(spec, path="", spans=())


@pytest.mark.parametrize("text", CANONICAL.values(), ids=CANONICAL.keys())
def test_canonical_text_round_trips(text: str):
    assert format_spec(load_one(text)) == text


def test_canonical_texts_cover_every_concept():
    specs = [load_one(text) for text in CANONICAL.values()]

    def words(key: str) -> set[str]:
        """Every value of one setting across the canonical texts (list items one by one)."""
        values = [getattr(spec, key) for spec in specs]
        return {v.value for value in values for v in (value if isinstance(value, tuple) else (value,))}

    assert words("norm") == {"rms", "layer"}
    assert words("residual") == {"pre", "post"}
    assert words("casting") == {"llama", "gemma", "none"}
    assert words("bias") == {"none", "shift"}
    assert words("store") == {"residual", "rstd", "mean"}
    assert words("quantize") == {"none", "int8", "fp8_e4m3"}
    assert words("backward") == {"kernels", "none"}
    assert {spec.weight for spec in specs} >= {
        Weight(WeightKind.NONE),
        Weight(WeightKind.SCALE),
        Weight(WeightKind.SCALE, 1.0),
    }
    assert any(spec.residual == () for spec in specs) and any(spec.store == () for spec in specs)
    assert any(len(spec.dtypes) == 1 for spec in specs) and any(len(spec.targets) == 1 for spec in specs)


def test_free_form_text_formats_to_canonical():
    text = """\
# settings in any order, defaults left out, comments and odd spacing
op add_rmsnorm { eps=1e-12 store = residual,rstd
    weight = scale+0.5   norm = rms
    targets = cuda, npu  dtypes = bf16, fp32  residual = pre }
"""
    assert format_spec(load_one(text)) == CANONICAL["llama_pre_residual_rstd"]


@pytest.mark.parametrize("value", [1e-6, 1e-5, 1e-12, 0.001, 1.0, 0.5, 2.5e-7, 1e16, 123.25, -1.0])
def test_numbers_print_shortest_and_read_back(value: float):
    text = format_number(value)
    assert float(text) == value
    assert "e+" not in text and "e-0" not in text
    # (fp32 weights: there the modules' initial scale (1 - offset) + offset is 1 within fp32's step at
    # 1 for offsets below 2^24; past it the check refuses the offset, and the value is read back as
    # eps alone)
    offset = text if abs(value) < 2**24 else "1.0"
    spec = load_one(f"op a {{ norm = rms weight = scale + {offset} eps = {abs(value)} dtypes = fp32 }}")
    assert spec.eps == abs(value) and (offset != text or spec.weight.offset == value)


SHIPPED = sorted(SPECS.glob("*.norm"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_specs_format_idempotently(path: Path):
    for spec in load_text(path.read_text(encoding="utf-8"), path.name):
        text = format_spec(spec)
        again = load_one(text)
        assert format_spec(again) == text
        assert bare(again) == bare(spec)
