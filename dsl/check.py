"""Stage 3: NormSpec -> errors for settings that contradict each other.

Every rule names both settings involved and says how to fix it; every error of
every spec is reported together.
"""

from __future__ import annotations

import math
import struct

from . import names
from .diagnostics import Diagnostic
from .kinds import KINDS
from .model import DType, NormSpec, ResidualMode, Store


def check(spec: NormSpec, failed: frozenset[str] = frozenset()) -> list[Diagnostic]:
    """The contradictions in ``spec``; rules that read a key in ``failed`` (a setting that had an
    error of its own, so the spec holds its default) are skipped."""
    errors = []

    def error(key, message, hint):
        errors.append(Diagnostic(spec.span(key), message, hint))

    def ok(*keys):
        return not failed.intersection(keys)

    kind = spec.kind
    for refusal in kind.refusals:  # the settings the kind does not allow (dsl/kinds/)
        if ok(refusal.key, "norm") and refusal.applies(spec):
            error(refusal.key, refusal.message, refusal.hint)
    if ok("store", "norm") and Store.MEAN in spec.store and not kind.has_mean:
        with_mean = " or ".join(k.name for k in KINDS.values() if k.has_mean)
        error(
            "store", f"store = mean needs norm = {with_mean}", f"{kind.noun} computes no mean; drop `mean` from store"
        )
    if ok("store", "residual") and Store.RESIDUAL in spec.store:
        if not spec.has_residual:
            hint = "add `residual = pre` or drop `residual` from store"
            error("store", "store = residual needs a residual input", hint)
        elif ResidualMode.PRE not in spec.residual:
            error(
                "store",
                "store = residual needs residual = pre",
                "post mode writes no sum: its residual out is the normalized output",
            )
    if ok("weight", "dtypes") and spec.weight.has_offset:
        # The modules' initial weight 1 - offset, as each weight dtype holds it (fp32, and the op's
        # 16-bit dtypes): the scale w + offset must start at 1 within that dtype's step at 1.
        offset = spec.weight.offset
        for dtype in sorted({DType.FP32, *spec.dtypes}, key=lambda d: d.value):
            scale = _rounded(_rounded(1.0 - offset, dtype) + offset, DType.FP32)
            if not abs(scale - 1.0) <= _STEP_AT_ONE[dtype]:
                error(
                    "weight",
                    f"the initial weight 1 - {offset:g} is {_rounded(1.0 - offset, dtype):g} in {dtype.value}, so a "
                    f"module's scale w + offset would start at {scale:g}, not 1",
                    "choose an offset whose 1 - offset the weight dtypes hold (0.0 and 1.0 do)",
                )
                break
    if ok("backward", "quantize") and spec.has_backward and spec.is_quantized:
        error(
            "backward",
            f"backward = kernels needs quantize = none (a {spec.quantize.value} output has no gradient)",
            "write `backward = none`, or leave backward out: quantized ops have none by default",
        )
    return errors


_STEP_AT_ONE = {DType.FP32: 2.0**-23, DType.FP16: 2.0**-10, DType.BF16: 2.0**-7}  # the gap above 1.0


def _rounded(value: float, dtype: DType) -> float:
    """``value`` as ``dtype`` holds it (round to nearest even; inf past its range)."""
    try:
        single = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)
    if dtype is DType.FP16:
        try:
            return struct.unpack("<e", struct.pack("<e", single))[0]
        except OverflowError:
            return math.copysign(math.inf, value)
    if dtype is DType.BF16:
        bits = struct.unpack("<I", struct.pack("<f", single))[0]
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]
    return single


# Attributes of torch.ops.NAMESPACE itself: a custom op of that name is shadowed by them.
OP_NAMESPACE_ATTRIBUTES = ("name",)


def _first_clash(spec: NormSpec, owners: dict, claims: list[tuple[str, str, str]]) -> list[Diagnostic]:
    """Claim each (name, what spec would do with it, the verb for another op doing it) in ``owners``
    for ``spec``; the error of the first name another op claimed already ([] where none)."""
    for name, doing, does in claims:
        other = owners.setdefault(name, spec)
        if other is not spec:
            where = other.span("op")
            message = f"op '{spec.name}' would {doing}, which op '{other.name}' {does} too"
            return [
                Diagnostic(
                    spec.span("op"), message, f"rename one of them (op '{other.name}' is at {where.path}:{where.line})"
                )
            ]
    return []


def _modules(spec: NormSpec) -> list[str]:
    """The generated modules of one op."""
    modules = [names.op_module(spec), names.reference_module(spec)]
    return modules + [names.target_module(spec, target) for target in spec.targets]


def check_names(specs: list[NormSpec], targets_unknown: frozenset[int] = frozenset()) -> list[Diagnostic]:
    """Op names must be unique across all spec files, and so must the modules, module classes and
    custom ops they generate. ``targets_unknown`` holds the id() of specs whose targets had an error."""
    errors, seen, owners, classes, registered = [], {}, {}, {}, {}
    for spec in specs:
        if spec.name in seen:
            first = seen[spec.name].span("op")
            hint = f"first defined at {first.path}:{first.line}"
            errors.append(Diagnostic(spec.span("op"), f"op '{spec.name}' is defined twice", hint))
            continue
        seen[spec.name] = spec
        if spec.name in OP_NAMESPACE_ATTRIBUTES:
            message = f"op name '{spec.name}' is reserved: torch.ops.NAMESPACE.{spec.name} is torch's own attribute"
            errors.append(Diagnostic(spec.span("op"), message, f"choose another name, e.g. '{spec.name}_norm'"))
        customs = [(c, f"register the custom op {c}", "registers") for c in names.custom_op_names(spec)]
        errors += _first_clash(spec, registered, customs)
        classes.setdefault(names.module_class(spec), []).append(spec)
        modules = _modules(spec)[:2] if id(spec) in targets_unknown else _modules(spec)
        errors += _first_clash(spec, owners, [(m, f"generate {m}.py", "generates") for m in modules])
    for class_name, owners_ in classes.items():
        if len(owners_) < 2:
            continue
        for spec in owners_:
            other = owners_[1] if spec is owners_[0] else owners_[0]
            where = other.span("op")
            errors.append(
                Diagnostic(
                    spec.span("op"),
                    f"op '{spec.name}' and op '{other.name}' both generate the module class {class_name}",
                    f"rename one of them (op '{other.name}' is at {where.path}:{where.line})",
                )
            )
    return errors
