"""Error-message snapshots of syntax mistakes: the exact text a person sees (values and rules:
tests/test_errors.py, whose ``errors_of`` these use).

Each case is (id, spec text, expected text): all that ``python build.py`` prints for the file.
"""

# ruff: noqa: E501  (snapshots hold the exact lines, and some are longer than 120)

import pytest

from dsl.diagnostics import SpecError
from dsl.parse import _EXAMPLES, parse

from .test_errors import errors_of

SYNTAX_CASES = [
    (
        "missing_equals",
        """\
op a {
    norm rms
}
""",
        """\
bad.norm:2:10: error: expected '=' after the setting name; found 'rms'
        norm rms
             ^~~
hint: settings are written `key = value`; separate several values with ','
1 error
""",
    ),
    (
        "missing_value",
        """\
op a {
    norm =
}
""",
        """\
bad.norm:3:1: error: expected a value after '=' or ','; found '}'
    }
    ^
hint: a list has one ',' between its values and none after the last
1 error
""",
    ),
    (
        "missing_closing_brace_at_end",
        """\
op a {
    norm = rms
""",
        """\
bad.norm:2:15: error: expected a setting `key = value` or the closing '}'; found the end of the file
        norm = rms
                  ^
hint: write `key = value`, or '}' to end the op
1 error
""",
    ),
    (
        "missing_closing_brace_before_next_op",
        """\
op a {
    norm = rms

op b {
    norm = layer
}
""",
        """\
bad.norm:4:1: error: expected '}' to close the op before the next one; found 'op'
    op b {
    ^~
hint: each op ends with '}'
1 error
""",
    ),
    (
        "trailing_comma",
        """\
op a {
    norm     = rms
    residual = pre, post,
}
""",
        """\
bad.norm:4:1: error: expected a value after '=' or ','; found '}'
    }
    ^
hint: a list has one ',' between its values and none after the last
1 error
""",
    ),
    (
        "double_comma",
        """\
op a {
    norm   = rms
    dtypes = fp16,, bf16
}
""",
        """\
bad.norm:3:19: error: expected a value after '=' or ','; found ','
        dtypes = fp16,, bf16
                      ^
hint: a list has one ',' between its values and none after the last
1 error
""",
    ),
    (
        "missing_offset",
        """\
op a {
    norm   = rms
    weight = scale +
}
""",
        """\
bad.norm:4:1: error: expected a number after '+'; found '}'
    }
    ^
hint: an offset is written `weight = scale + 1.0`
1 error
""",
    ),
    (
        "missing_op_name",
        """\
op {
    norm = rms
}
""",
        """\
bad.norm:1:4: error: expected the op's name after 'op'; found '{'
    op {
       ^
hint: an op is written `op NAME { key = value ... }`
1 error
""",
    ),
    (
        "not_an_op",
        """\
norm = rms
""",
        """\
bad.norm:1:1: error: expected `op NAME { ... }`; found 'norm'
    norm = rms
    ^~~~
hint: a spec file holds ops only, each written `op NAME { key = value ... }`
1 error
""",
    ),
]


@pytest.mark.parametrize(
    ("spec", "expected"), [case[1:] for case in SYNTAX_CASES], ids=[case[0] for case in SYNTAX_CASES]
)
def test_syntax_error_text(spec: str, expected: str):
    assert errors_of(spec) == expected


VALID = "op a { norm = rms residual = pre, post weight = scale + 1.0 eps = 1e-6 }\nop b { norm = layer }\n"
EXAMPLE_MESSAGES = {message for message, _ in _EXAMPLES}


def test_syntax_mistakes_anywhere_get_a_named_message_and_a_hint():
    """Drop a token or add a stray one anywhere in a valid file: the parser's
    state differs with the depth (first or later op, setting, value), and every
    depth must still match one of the examples, not the generic fallback."""
    tokens = VALID.replace("\n", " \n ").split(" ")
    mistakes = {" ".join(tokens[:i] + tokens[i + 1 :]) for i in range(len(tokens))}
    mistakes |= {" ".join(tokens[:i] + [extra] + tokens[i:]) for i in range(len(tokens)) for extra in ",={}+;"}
    checked = 0
    for text in sorted(mistakes):
        try:
            parse(text, "bad.norm")
        except SpecError as error:
            (diagnostic,) = error.diagnostics
            assert diagnostic.message.split("; found ")[0] in EXAMPLE_MESSAGES, text
            assert diagnostic.hint, text
            checked += 1
    assert checked > 100


def test_caret_keeps_the_lines_tabs():
    spec = "op a {\n\tnorm = rmz\n}\n"
    assert errors_of(spec) == (
        "bad.norm:2:9: error: unknown norm 'rmz'\n"
        "    \tnorm = rmz\n"
        "    \t       ^~~\n"
        "hint: did you mean 'rms'? allowed values are rms, layer\n"
        "1 error\n"
    )
