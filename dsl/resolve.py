"""Stage 2: syntax tree -> NormSpec.

Maps every key and word to the model's enums and reports, all at once, unknown
keys and values (with the allowed ones), settings given twice, wrong arity and
missing required settings. Contradictions between valid settings are the
checker's job (``check``).
"""

from __future__ import annotations

import builtins
import difflib
import enum
import keyword
import math
import re
import struct

from .diagnostics import Diagnostic, allowed
from .model import (
    DEFAULT_EPS,
    KEY_ORDER,
    Accumulate,
    Backward,
    Bias,
    Casting,
    DType,
    NormKind,
    NormSpec,
    Quantize,
    ResidualMode,
    Store,
    Target,
    Weight,
    WeightKind,
)
from .names import class_name
from .parse import OpNode, SettingNode, SpecFile, ValueNode

# Settings that take one word, and the enum it names.
_SINGLE = {
    "norm": NormKind,
    "accumulate": Accumulate,
    "casting": Casting,
    "bias": Bias,
    "quantize": Quantize,
    "backward": Backward,
}
# Settings that take a list of words; those where `none` means the empty list.
_LISTS = {"residual": ResidualMode, "store": Store, "dtypes": DType, "targets": Target}
_NONE_MEANS_EMPTY = {"residual", "store"}

_DEFAULTS = {
    "residual": (),
    "accumulate": Accumulate.FP32,
    "casting": Casting.LLAMA,
    "weight": Weight(WeightKind.SCALE),
    "bias": Bias.NONE,
    "store": (),
    "quantize": Quantize.NONE,
    "dtypes": (DType.FP32, DType.FP16, DType.BF16),
    "targets": (Target.NPU, Target.CUDA),
}

_OP_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
# Longest op name: its longest generated file name (NAME_reference.py) must stay far below
# the 255 bytes most file systems allow.
MAX_OP_NAME = 64
# Module names the generated op module imports: an op of that name would hide them.
_RESERVED = ("runtime", "torch")
# Words that are no GPU or NPU target name but mean one: (target, why).
_TARGET_ALIASES = {
    "gpu": ("cuda", "NVIDIA and AMD GPUs are the 'cuda' target"),
    "nvidia": ("cuda", "NVIDIA GPUs are the 'cuda' target"),
    "amd": ("cuda", "AMD GPUs are the 'cuda' target (Triton's ROCm backend)"),
    "rocm": ("cuda", "AMD GPUs are the 'cuda' target (Triton's ROCm backend)"),
    "hip": ("cuda", "AMD GPUs are the 'cuda' target (Triton's ROCm backend)"),
    "triton": ("cuda", "every target emits Triton; NVIDIA and AMD GPUs are the 'cuda' target"),
    "ascend": ("npu", "Ascend NPUs are the 'npu' target"),
}
_FP32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]  # 3.4028234663852886e38
_FP32_MIN_NORMAL = 2.0**-126  # 1.1754943508222875e-38; smaller non-zero values are denormal or 0


def op_name_problem(name: str) -> tuple[str, str] | None:
    """(message, hint) when ``name`` cannot be an op name, else None."""
    if len(name) > MAX_OP_NAME:
        return (
            f"op name is {len(name)} characters long; at most {MAX_OP_NAME} are allowed",
            "the name becomes file, module and kernel names; choose a shorter one",
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return (
            f"op name '{name}' is a Python keyword",
            f"the name becomes a Python function and module name; choose another, e.g. '{name}_norm'",
        )
    if not _OP_NAME.match(name):
        return (
            f"op name '{name}' is not a valid module name",
            "use lower case letters, digits and '_', starting with a letter",
        )
    if keyword.iskeyword(module := class_name(name)):  # (none -> None: the package did not import)
        return (
            f"op name '{name}' makes the module class '{module}', a Python keyword",
            f"the class is named after the op; choose another name, e.g. '{name}_norm'",
        )
    if hasattr(builtins, name):
        return (
            f"op name '{name}' shadows the Python builtin '{name}', which the generated code may use",
            f"choose another name, e.g. '{name}_norm'",
        )
    if name in _RESERVED:
        return (
            f"op name '{name}' is reserved (the generated code imports a module of that name)",
            "choose another name; reserved names are " + ", ".join(_RESERVED),
        )
    return None


def fp32_problem(what: str, value: ValueNode) -> str | None:
    """Why the number written in ``value`` does not survive the conversion to fp32, or None."""
    number = value.number
    text = value.text.split("+", 1)[1].strip() if value.kind == "offset" else value.text
    written_zero = not re.search(r"[1-9]", text.split("e")[0].split("E")[0])
    if not math.isfinite(number) or abs(number) > _FP32_MAX:
        return f"{what} {text} is out of fp32's range (the largest fp32 number is about 3.4e38)"
    if not written_zero and abs(number) < _FP32_MIN_NORMAL:
        return (
            f"{what} {text} is too small for fp32 "
            "(it would become 0 or a denormal; the smallest normal fp32 number is about 1.2e-38)"
        )
    return None


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean '{close[0]}'? " if close else ""


class _Resolver:
    def __init__(self):
        self.errors: list[Diagnostic] = []

    def error(self, span, message, hint=""):
        self.errors.append(Diagnostic(span, message, hint))

    # -- values -------------------------------------------------------------
    def word(self, setting: SettingNode, value: ValueNode, kind: type[enum.Enum], none_ok: bool = False):
        choices = [m.value for m in kind] + (["none"] if none_ok else [])
        if value.kind != "word":
            self.error(value.span, f"{setting.key} takes a word, not '{value.text}'", allowed(choices))
            return None
        try:
            return kind(value.word)
        except ValueError:
            alias = _TARGET_ALIASES.get(value.word.lower()) if kind is Target else None
            if alias:
                hint = f"'{value.word}' is not a target name: {alias[1]}; " + allowed(choices)
            else:
                hint = _did_you_mean(value.word, choices) + allowed(choices)
            self.error(value.span, f"unknown {setting.key} '{value.word}'", hint)
            return None

    def single(self, setting: SettingNode, hint: str):
        if len(setting.values) != 1:
            extra = setting.values[1]
            self.error(extra.span, f"{setting.key} takes one value, got {len(setting.values)}", hint)
            return None
        return setting.values[0]

    def one_word(self, setting: SettingNode, kind):
        value = self.single(setting, "keep one; " + allowed(m.value for m in kind))
        return None if value is None else self.word(setting, value, kind)

    def word_list(self, setting: SettingNode, kind):
        values = setting.values
        none_ok = setting.key in _NONE_MEANS_EMPTY
        if none_ok and len(values) == 1 and values[0].kind == "word" and values[0].word == "none":
            return ()
        result, seen = [], {}
        for value in values:
            if none_ok and value.kind == "word" and value.word == "none":
                self.error(
                    value.span,
                    f"'none' cannot be combined with other {setting.key} values",
                    f"write `{setting.key} = none` alone, or drop 'none' from the list",
                )
                continue
            member = self.word(setting, value, kind, none_ok)
            if member is None:
                continue
            if member in seen:
                self.error(value.span, f"{setting.key} lists '{member.value}' twice", "list each value once")
                continue
            seen[member] = value
            result.append(member)
        if not values:
            self.error(setting.span, f"{setting.key} needs at least one value")
        return tuple(result)

    def weight(self, setting: SettingNode):
        choices = ["none", "scale", "scale + OFFSET"]
        value = self.single(setting, "keep one; " + allowed(choices))
        if value is None:
            return None
        if value.kind == "number":
            self.error(value.span, f"weight takes a word, not '{value.text}'", allowed(choices))
            return None
        try:
            kind = WeightKind(value.word)
        except ValueError:
            hint = _did_you_mean(value.word, ["none", "scale"]) + allowed(choices)
            self.error(value.span, f"unknown weight '{value.word}'", hint)
            return None
        if value.kind == "offset":
            if kind is WeightKind.NONE:
                hint = "write `weight = scale + OFFSET` or `weight = none`"
                self.error(value.span, "an offset needs a weight to add to", hint)
                return None
            problem = fp32_problem("the weight offset", value)
            if problem:
                self.error(value.span, problem, "the kernels add the offset in fp32; write e.g. `weight = scale + 1.0`")
                return None
            return Weight(kind, value.number)
        return Weight(kind)

    def eps(self, setting: SettingNode):
        value = self.single(setting, "write one number, e.g. `eps = 1e-6`")
        if value is None:
            return None
        if value.kind != "number":
            self.error(value.span, f"eps takes a number, not '{value.text}'", "write e.g. `eps = 1e-6`")
            return None
        problem = fp32_problem("eps", value)
        if problem:
            self.error(value.span, problem, "the kernels add eps in fp32; write e.g. `eps = 1e-6`")
            return None
        if not value.number > 0.0:
            self.error(value.span, f"eps must be a positive number, got {value.text}", "write e.g. `eps = 1e-6`")
            return None
        return value.number

    # -- ops ----------------------------------------------------------------
    def op(self, node: OpNode, path: str) -> tuple[NormSpec | None, frozenset[str]]:
        """The op's spec and the keys that failed; with failed keys the spec holds defaults for them."""
        before = len(self.errors)
        problem = op_name_problem(node.name)
        if problem:
            self.error(node.name_span, *problem)
        values: dict[str, object] = {}
        spans = [("op", node.name_span)]
        first: dict[str, SettingNode] = {}
        failed = set()
        for setting in node.settings:
            key = setting.key
            if key not in KEY_ORDER:
                hint = _did_you_mean(key, KEY_ORDER) + "allowed settings are " + ", ".join(KEY_ORDER)
                self.error(setting.key_span, f"unknown setting '{key}'", hint)
                continue
            if key in first:
                self.error(setting.key_span, f"'{key}' is set twice", f"first set at line {first[key].key_span.line}")
                continue
            first[key] = setting
            spans.append((key, setting.span))
            if key in _SINGLE:
                result = self.one_word(setting, _SINGLE[key])
            elif key in _LISTS:
                result = self.word_list(setting, _LISTS[key])
            elif key == "weight":
                result = self.weight(setting)
            else:
                result = self.eps(setting)
            if result is not None:
                values[key] = result
            else:
                failed.add(key)
        if "norm" not in first:
            hint = "add `norm = rms` or `norm = layer`"
            self.error(node.name_span, f"op '{node.name}' does not say which norm it is", hint)
        if "norm" not in values:
            return None, frozenset(KEY_ORDER)
        if len(self.errors) > before:
            failed.add("op")
        norm = values["norm"]
        # a quantized output has no gradient: such ops default to no backward
        quantized = values.get("quantize", Quantize.NONE) is not Quantize.NONE
        backward = Backward.NONE if quantized else Backward.KERNELS
        settings = {**_DEFAULTS, "eps": DEFAULT_EPS[norm], "backward": backward, **values}
        return NormSpec(name=node.name, path=path, spans=tuple(spans), **settings), frozenset(failed)


def resolve_partial(spec_file: SpecFile) -> tuple[list[tuple[NormSpec, frozenset[str]]], list[Diagnostic]]:
    """Every op of one file that names its norm, with the keys that failed (defaults stand in for
    them, so that the checker can still report the contradictions between the other settings)."""
    resolver = _Resolver()
    results = [resolver.op(node, spec_file.path) for node in spec_file.ops]
    return [(spec, failed) for spec, failed in results if spec is not None], resolver.errors


def resolve(spec_file: SpecFile) -> tuple[list[NormSpec], list[Diagnostic]]:
    """All ops of one file that have no error, and every error found in it."""
    partial, errors = resolve_partial(spec_file)
    return [spec for spec, failed in partial if not failed], errors
