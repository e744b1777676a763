"""The model: what a spec says, as frozen dataclasses and enums.

Nothing past the resolver handles raw strings: every concept is an enum whose
value is the token a spec writes, and code spellings live in one table per enum
(``TORCH_DTYPE``, ``TRITON_DTYPE``, ...). ``format_spec`` prints the canonical
text of a spec; ``format_spec(resolve(parse(text))) == text`` holds for every
canonical text (tested).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .kinds import KINDS, Kind


@dataclass(frozen=True)
class Span:
    """Where something was written: 1-based line and column, end exclusive."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int


# The registered norm kinds (dsl/kinds/: each kind's math and words), as spec words: NormKind.RMS, ...
NormKind = enum.Enum("NormKind", [(name.upper(), name) for name in KINDS], module=__name__)


class ResidualMode(enum.Enum):
    PRE = "pre"  # s = x + r; y = norm(s); returns (y, s)
    POST = "post"  # y = norm(x + r); the residual out is y itself


class Accumulate(enum.Enum):
    FP32 = "fp32"


class Casting(enum.Enum):
    LLAMA = "llama"  # x_hat rounded to the input dtype, then the affine part
    GEMMA = "gemma"  # everything in fp32, one rounding at the end
    NONE = "none"  # every step rounded to the input dtype


class WeightKind(enum.Enum):
    NONE = "none"
    SCALE = "scale"


@dataclass(frozen=True)
class Weight:
    kind: WeightKind
    offset: float = 0.0  # y = x_hat * (w + offset); Gemma uses 1.0

    @property
    def has_offset(self) -> bool:
        return self.offset != 0.0


class Bias(enum.Enum):
    NONE = "none"
    SHIFT = "shift"


class Store(enum.Enum):
    """Outputs a spec may ask to be written besides y."""

    RESIDUAL = "residual"
    RSTD = "rstd"
    MEAN = "mean"


class Quantize(enum.Enum):
    NONE = "none"
    INT8 = "int8"
    FP8_E4M3 = "fp8_e4m3"


class Backward(enum.Enum):
    """Whether the op has a gradient: generated backward kernels, or none (calls needing one are refused)."""

    KERNELS = "kernels"
    NONE = "none"


class DType(enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class Target(enum.Enum):
    NPU = "npu"
    CUDA = "cuda"


# Code spellings, one table per enum.
TORCH_DTYPE = {DType.FP32: "torch.float32", DType.FP16: "torch.float16", DType.BF16: "torch.bfloat16"}
TRITON_DTYPE = {DType.FP32: "tl.float32", DType.FP16: "tl.float16", DType.BF16: "tl.bfloat16"}
DTYPE_BYTES = {DType.FP32: 4, DType.FP16: 2, DType.BF16: 2}

# Quantized outputs: the torch dtype of q, its range, and the dtype the kernel
# stores (fp8 is written as its exact bit pattern in uint8 and viewed back).
QUANT_TORCH_DTYPE = {Quantize.INT8: "torch.int8", Quantize.FP8_E4M3: "torch.float8_e4m3fn"}
QUANT_STORAGE_DTYPE = {Quantize.INT8: "torch.int8", Quantize.FP8_E4M3: "torch.uint8"}
QUANT_STORAGE_TOKEN = {Quantize.INT8: "int8", Quantize.FP8_E4M3: "uint8"}  # the same, as a kernel ABI element
QUANT_MIN = {Quantize.INT8: -128.0, Quantize.FP8_E4M3: -448.0}
QUANT_MAX = {Quantize.INT8: 127.0, Quantize.FP8_E4M3: 448.0}
QUANT_SCALE_FLOOR = 1e-12

DEFAULT_EPS = {norm: KINDS[norm.value].default_eps for norm in NormKind}


@dataclass(frozen=True)
class NormSpec:
    """One operator, as its spec file describes it."""

    name: str
    path: str  # the generated headers' name of its file: repo-relative, else its folder's and its own
    norm: NormKind
    residual: tuple[ResidualMode, ...]  # empty: no residual input
    accumulate: Accumulate
    casting: Casting
    weight: Weight
    bias: Bias
    store: tuple[Store, ...]
    quantize: Quantize
    dtypes: tuple[DType, ...]
    targets: tuple[Target, ...]
    eps: float
    backward: Backward = Backward.KERNELS
    # Where each setting was written ("op" is the header); keys are setting names.
    spans: tuple[tuple[str, Span], ...] = ()

    def span(self, key: str) -> Span:
        for name, span in self.spans:
            if name == key:
                return span
        return dict(self.spans)["op"]

    # Derived facts, used by the planner and the templates.
    @property
    def has_residual(self) -> bool:
        return bool(self.residual)

    @property
    def has_weight(self) -> bool:
        return self.weight.kind is WeightKind.SCALE

    @property
    def has_bias(self) -> bool:
        return self.bias is Bias.SHIFT

    @property
    def kind(self) -> Kind:
        """The norm's math and words (dsl/kinds/)."""
        return KINDS[self.norm.value]

    @property
    def is_layer(self) -> bool:
        """The kind computes a row mean, as layer norm does: the targets give it layer norm's
        measured tables and unified-buffer figures, which budget for the mean."""
        return self.kind.has_mean

    @property
    def is_quantized(self) -> bool:
        return self.quantize is not Quantize.NONE

    @property
    def stores_rstd(self) -> bool:
        return Store.RSTD in self.store

    @property
    def stores_mean(self) -> bool:
        return Store.MEAN in self.store

    @property
    def has_backward(self) -> bool:
        return self.backward is Backward.KERNELS

    @property
    def saves_mean(self) -> bool:
        """The forward can write the mean: asked for by the caller, or saved for the backward."""
        return self.stores_mean or (self.has_backward and self.kind.has_mean)

    @property
    def saves_rstd(self) -> bool:
        """The forward can write rstd: asked for by the caller, or saved for the backward."""
        return self.stores_rstd or self.has_backward


# ----------------------------------------------------------------------------
# Canonical text

KEY_ORDER = (
    "norm",
    "residual",
    "accumulate",
    "casting",
    "weight",
    "bias",
    "store",
    "quantize",
    "dtypes",
    "targets",
    "eps",
    "backward",
)


def format_number(value: float) -> str:
    """Shortest text that reads back as the same float: 1e-06 prints as 1e-6."""
    text = repr(float(value))
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else ""
        text = f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
    return text


def _words(values: tuple[enum.Enum, ...]) -> str:
    return ", ".join(v.value for v in values) if values else "none"


def format_weight(weight: Weight) -> str:
    if weight.kind is WeightKind.SCALE and weight.has_offset:
        return f"scale + {format_number(weight.offset)}"
    return weight.kind.value


def setting_text(spec: NormSpec, key: str) -> str:
    """The canonical value text of one setting."""
    return {
        "norm": spec.norm.value,
        "residual": _words(spec.residual),
        "accumulate": spec.accumulate.value,
        "casting": spec.casting.value,
        "weight": format_weight(spec.weight),
        "bias": spec.bias.value,
        "store": _words(spec.store),
        "quantize": spec.quantize.value,
        "dtypes": _words(spec.dtypes),
        "targets": _words(spec.targets),
        "eps": format_number(spec.eps),
        "backward": spec.backward.value,
    }[key]


def format_spec(spec: NormSpec) -> str:
    """The canonical text of a spec: every setting, in KEY_ORDER."""
    width = max(len(key) for key in KEY_ORDER)
    lines = [f"op {spec.name} {{"]
    lines += [f"    {key:<{width}} = {setting_text(spec, key)}" for key in KEY_ORDER]
    lines.append("}")
    return "\n".join(lines) + "\n"
