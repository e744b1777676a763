"""Stage 1: spec text -> syntax tree (Lark, LALR, positions on every node).

The syntax tree keeps what was written and where; it knows nothing of which
keys or values exist (that is ``resolve``'s job), so a typo in a value is
reported with the list of allowed values rather than as a parse error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedInput, UnexpectedToken, v_args

from .diagnostics import ODD_BREAKS, Diagnostic, SpecError
from .model import Span


@dataclass(frozen=True)
class ValueNode:
    kind: str  # "word", "number" or "offset" (word + number)
    word: str  # the word ("" for a number)
    number: float | None  # the number (None for a word)
    text: str  # as written
    span: Span


@dataclass(frozen=True)
class SettingNode:
    key: str
    key_span: Span
    values: tuple[ValueNode, ...]
    span: Span


@dataclass(frozen=True)
class OpNode:
    name: str
    name_span: Span
    settings: tuple[SettingNode, ...]
    span: Span


@dataclass(frozen=True)
class SpecFile:
    path: str
    text: str
    ops: tuple[OpNode, ...]


_PARSER = Lark.open(
    "grammar.lark",
    rel_to=__file__,
    parser="lalr",
    propagate_positions=True,
    strict=True,
)


def _token_span(path: str, token: Token) -> Span:
    return Span(path, token.line, token.column, token.end_line, token.end_column)


def _meta_span(path: str, meta) -> Span:
    return Span(path, meta.line, meta.column, meta.end_line, meta.end_column)


class _ToSyntax(Transformer):
    """One method per grammar alias; builds nodes, validates nothing."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    @v_args(meta=True)
    def word(self, meta, children):
        (name,) = children
        return ValueNode("word", str(name), None, str(name), _meta_span(self.path, meta))

    @v_args(meta=True)
    def number(self, meta, children):
        (number,) = children
        return ValueNode("number", "", float(number), str(number), _meta_span(self.path, meta))

    @v_args(meta=True)
    def offset(self, meta, children):
        name, number = children
        text = f"{name} + {number}"
        return ValueNode("offset", str(name), float(number), text, _meta_span(self.path, meta))

    @v_args(meta=True)
    def setting(self, meta, children):
        key, *values = children
        return SettingNode(str(key), _token_span(self.path, key), tuple(values), _meta_span(self.path, meta))

    @v_args(meta=True)
    def op(self, meta, children):
        name, *settings = children
        return OpNode(str(name), _token_span(self.path, name), tuple(settings), _meta_span(self.path, meta))

    def start(self, children):
        return tuple(children)


# Common mistakes, matched against the parser's state (Lark's match_examples):
# (message, hint) -> examples. Lark compares parser states including the depth
# of the parse stack, which grows after a file's first op, an op's first
# setting and a list's first value: ``_in_context`` adds those. Within
# one state the first label wins unless a later example has the same token.
_EXAMPLES = {
    ("expected '=' after the setting name", "settings are written `key = value`; separate several values with ','"): [
        "op a { norm rms }",
        "op a { norm: rms }",
        "op a { residual = pre post }",
    ],
    ("expected a value after '=' or ','", "a list has one ',' between its values and none after the last"): [
        "op a { norm = }",
        "op a { norm = , }",
        "op a { residual = pre, }",
        "op a { residual = pre,, post }",
    ],
    ("expected a number after '+'", "an offset is written `weight = scale + 1.0`"): [
        "op a { weight = scale + }",
        "op a { weight = scale + one }",
    ],
    ("expected the op's name after 'op'", "an op is written `op NAME { key = value ... }`"): [
        "op { norm = rms }",
        "op = { }",
    ],
    ("expected '{' after the op name", "an op is written `op NAME { key = value ... }`"): [
        "op a norm = rms }",
        "op a = { }",
    ],
    ("expected a setting `key = value` or the closing '}'", "write `key = value`, or '}' to end the op"): [
        "op a {",
        "op a { norm = rms",
        "op a { eps = 1",
        "op a { weight = scale + 1",
        "op a { = rms }",
        "op a { norm = rms; }",
    ],
    ("expected '}' to close the op before the next one", "each op ends with '}'"): [
        "op a { op b { } }",
        "op a { norm = rms op b { } }",
        "op a { eps = 1 op b { } }",
        "op a { weight = scale + 1 op b { } }",
    ],
    ("expected `op NAME { ... }`", "a spec file holds ops only, each written `op NAME { key = value ... }`"): [
        "norm = rms",
        "opp a { }",
        "{ }",
        "op a { } }",
    ],
}


def _in_context(example: str) -> list[str]:
    """The example as written, and after an earlier value, setting and op."""
    examples = [example]
    examples += [e.replace("= ", "= none, ", 1) for e in examples]
    examples += [e.replace("{ ", "{ eps = 1 ", 1) for e in examples]
    examples += ["op z { } " + e for e in examples]
    return examples


_EXAMPLES_IN_CONTEXT = {label: [c for e in examples for c in _in_context(e)] for label, examples in _EXAMPLES.items()}

# For a mistake no example matches: what the parser expected, in words.
_TOKEN_WORDS = {
    "OP": "'op'",
    "NAME": "a name",
    "NUMBER": "a number",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "EQUAL": "'='",
    "COMMA": "','",
    "PLUS": "'+'",
    "$END": "the end of the file",
}


def _expected(error: UnexpectedInput) -> str:
    # UnexpectedToken has accepts (and expected), UnexpectedCharacters has allowed.
    tokens = getattr(error, "accepts", None) or getattr(error, "expected", None) or getattr(error, "allowed", ())
    words = sorted(_TOKEN_WORDS.get(t, t) for t in tokens)
    if not words:
        return "syntax error"
    return "expected " + (", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0])


def _syntax_diagnostic(path: str, text: str, error: UnexpectedInput) -> Diagnostic:
    label = error.match_examples(_PARSER.parse, _EXAMPLES_IN_CONTEXT, use_accepts=True)
    message, hint = label or (_expected(error), "an op is written `op NAME { key = value, value ... }`")
    line, column = max(error.line, 1), max(error.column, 1)
    width = 1
    if isinstance(error, UnexpectedToken) and error.token.type == "$END":
        found = "the end of the file"
        # Lark puts the end on the last token: point just after it.
        if error.token.end_line is not None:
            line, column = error.token.end_line, error.token.end_column
    elif isinstance(error, UnexpectedToken):
        found = f"'{error.token}'"
        width = max(len(str(error.token)), 1)
    elif isinstance(error, UnexpectedCharacters):
        char = text[error.pos_in_stream]
        found = f"'{char}'" if char.isprintable() else repr(char)
        if char.isdigit():  # (not 0-9: the grammar's numbers are ASCII; \d took every script's digits)
            hint = f"numbers are written with the digits 0-9; '{char}' is U+{ord(char):04X}"
    else:
        found = "the end of the file"
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    span = Span(path, line, column, line, column + width)
    return Diagnostic(span, f"{message}; found {found}", hint)


# Line breaks other than \n and \r\n: editors and Python end a line at each, the parser does not (a
# comment ran on over the next setting, which was then silently not set; positions were off).
_ODD_BREAK = re.compile(r"\r(?!\n)|[" + "".join(c for c in ODD_BREAKS if c != "\r") + "]")


def _odd_breaks(text: str, path: str) -> list[Diagnostic]:
    """An error at each line break the parser would not see as one (at most three)."""
    found = []
    for match in list(_ODD_BREAK.finditer(text))[:3]:
        at = match.start()
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        message = f"the file has {ODD_BREAKS[match.group()][0]}, a line break spec files do not take"
        hint = "end lines with \\n (or \\r\\n): an editor shows a line break here, the spec parser does not"
        found.append(Diagnostic(Span(path, line, column, line, column + 1), message, hint))
    return found


def parse(text: str, path: str = "<spec>") -> SpecFile:
    """Parse one spec file. Raises SpecError (with position) on a syntax error."""
    if odd := _odd_breaks(text, path):
        raise SpecError(odd, {path: text})
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as error:
        raise SpecError([_syntax_diagnostic(path, text, error)], {path: text}) from None
    return SpecFile(path, text, _ToSyntax(path).transform(tree))
