"""Error-message snapshots: the exact text a person sees for each mistake in a spec's values and rules
(the syntax mistakes: tests/test_errors_syntax.py).

Each case is (id, spec text, expected text). The expected text is all that
``python build.py`` prints for the file: ``path:line:col: error: message``, the
source line, a caret under the culprit, a hint, and the count of errors.
"""

# ruff: noqa: E501  (snapshots hold the exact lines, and some are longer than 120)

import pytest

from dsl.diagnostics import SpecError
from dsl.pipeline import load_text


def errors_of(text: str, path: str = "bad.norm") -> str:
    with pytest.raises(SpecError) as info:
        load_text(text, path)
    assert str(info.value) == info.value.render()
    return info.value.render() + "\n"


CASES = [
    (
        "unknown_value_did_you_mean",
        """\
op a {
    norm    = rms
    casting = lama
}
""",
        """\
bad.norm:3:15: error: unknown casting 'lama'
        casting = lama
                  ^~~~
hint: did you mean 'llama'? allowed values are llama, gemma, none
1 error
""",
    ),
    (
        "unknown_setting",
        """\
op a {
    norm  = rms
    dtype = fp16
}
""",
        """\
bad.norm:3:5: error: unknown setting 'dtype'
        dtype = fp16
        ^~~~~
hint: did you mean 'dtypes'? allowed settings are norm, residual, accumulate, casting, weight, bias, store, quantize, dtypes, targets, eps, backward
1 error
""",
    ),
    (
        "setting_given_twice",
        """\
op a {
    norm = rms
    eps  = 1e-6
    norm = layer
}
""",
        """\
bad.norm:4:5: error: 'norm' is set twice
        norm = layer
        ^~~~
hint: first set at line 2
1 error
""",
    ),
    (
        "number_for_a_word",
        """\
op a {
    norm = 2
}
""",
        """\
bad.norm:2:12: error: norm takes a word, not '2'
        norm = 2
               ^
hint: allowed values are rms, layer
1 error
""",
    ),
    (
        "one_value_only",
        """\
op a {
    norm    = rms
    casting = llama, gemma
}
""",
        """\
bad.norm:3:22: error: casting takes one value, got 2
        casting = llama, gemma
                         ^~~~~
hint: keep one; allowed values are llama, gemma, none
1 error
""",
    ),
    (
        "duplicate_list_value",
        """\
op a {
    norm    = rms
    targets = npu, cuda, npu
}
""",
        """\
bad.norm:3:26: error: targets lists 'npu' twice
        targets = npu, cuda, npu
                             ^~~
hint: list each value once
1 error
""",
    ),
    (
        "none_mixed_with_values",
        """\
op a {
    norm     = rms
    residual = none, pre
}
""",
        """\
bad.norm:3:16: error: 'none' cannot be combined with other residual values
        residual = none, pre
                   ^~~~
hint: write `residual = none` alone, or drop 'none' from the list
1 error
""",
    ),
    (
        "missing_norm",
        """\
op a {
    residual = pre
}
""",
        """\
bad.norm:1:4: error: op 'a' does not say which norm it is
    op a {
       ^
hint: add `norm = rms` or `norm = layer`
1 error
""",
    ),
    (
        "bad_op_name",
        """\
op AddRMSNorm {
    norm = rms
}
""",
        """\
bad.norm:1:4: error: op name 'AddRMSNorm' is not a valid module name
    op AddRMSNorm {
       ^~~~~~~~~~
hint: use lower case letters, digits and '_', starting with a letter
1 error
""",
    ),
    (
        "reserved_op_name",
        """\
op torch {
    norm = rms
}
""",
        """\
bad.norm:1:4: error: op name 'torch' is reserved (the generated code imports a module of that name)
    op torch {
       ^~~~~
hint: choose another name; reserved names are runtime, torch
1 error
""",
    ),
    (
        "eps_zero",
        """\
op a {
    norm = rms
    eps  = 0
}
""",
        """\
bad.norm:3:12: error: eps must be a positive number, got 0
        eps  = 0
               ^
hint: write e.g. `eps = 1e-6`
1 error
""",
    ),
    (
        "eps_negative",
        """\
op a {
    norm = rms
    eps  = -1e-6
}
""",
        """\
bad.norm:3:12: error: eps must be a positive number, got -1e-6
        eps  = -1e-6
               ^~~~~
hint: write e.g. `eps = 1e-6`
1 error
""",
    ),
    (
        "eps_word",
        """\
op a {
    norm = rms
    eps  = tiny
}
""",
        """\
bad.norm:3:12: error: eps takes a number, not 'tiny'
        eps  = tiny
               ^~~~
hint: write e.g. `eps = 1e-6`
1 error
""",
    ),
    (
        "eps_out_of_range",
        """\
op a {
    norm = rms
    eps  = 1e999
}
""",
        """\
bad.norm:3:12: error: eps 1e999 is out of fp32's range (the largest fp32 number is about 3.4e38)
        eps  = 1e999
               ^~~~~
hint: the kernels add eps in fp32; write e.g. `eps = 1e-6`
1 error
""",
    ),
    (
        "offset_out_of_range",
        """\
op a {
    norm   = rms
    weight = scale + 1e999
}
""",
        """\
bad.norm:3:14: error: the weight offset 1e999 is out of fp32's range (the largest fp32 number is about 3.4e38)
        weight = scale + 1e999
                 ^~~~~~~~~~~~~
hint: the kernels add the offset in fp32; write e.g. `weight = scale + 1.0`
1 error
""",
    ),
    (
        "offset_on_no_weight",
        """\
op a {
    norm   = rms
    weight = none + 1.0
}
""",
        """\
bad.norm:3:14: error: an offset needs a weight to add to
        weight = none + 1.0
                 ^~~~~~~~~~
hint: write `weight = scale + OFFSET` or `weight = none`
1 error
""",
    ),
    (
        "bias_on_rms",
        """\
op a {
    norm = rms
    bias = shift
}
""",
        """\
bad.norm:3:5: error: bias = shift needs norm = layer
        bias = shift
        ^~~~~~~~~~~~
hint: an RMS norm subtracts no mean; write `bias = none`
1 error
""",
    ),
    (
        "mean_on_rms",
        """\
op a {
    norm  = rms
    store = mean
}
""",
        """\
bad.norm:3:5: error: store = mean needs norm = layer
        store = mean
        ^~~~~~~~~~~~
hint: an RMS norm computes no mean; drop `mean` from store
1 error
""",
    ),
    (
        "stored_residual_without_residual",
        """\
op a {
    norm     = rms
    residual = none
    store    = residual
}
""",
        """\
bad.norm:4:5: error: store = residual needs a residual input
        store    = residual
        ^~~~~~~~~~~~~~~~~~~
hint: add `residual = pre` or drop `residual` from store
1 error
""",
    ),
    (
        "stored_residual_in_post_mode",
        """\
op a {
    norm     = rms
    residual = post
    store    = residual
}
""",
        """\
bad.norm:4:5: error: store = residual needs residual = pre
        store    = residual
        ^~~~~~~~~~~~~~~~~~~
hint: post mode writes no sum: its residual out is the normalized output
1 error
""",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_error_text(spec: str, expected: str):
    assert errors_of(spec) == expected
