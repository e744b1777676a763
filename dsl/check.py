"""Stage 3: NormSpec -> errors for settings that contradict each other.

Every rule names both settings involved and says how to fix it; every error of
every spec is reported together.
"""

from __future__ import annotations

from . import names
from .diagnostics import Diagnostic
from .model import NormSpec, ResidualMode, Store


def check(spec: NormSpec) -> list[Diagnostic]:
    errors = []

    def error(key, message, hint):
        errors.append(Diagnostic(spec.span(key), message, hint))

    if spec.has_bias and not spec.is_layer:
        error("bias", "bias = shift needs norm = layer", "an RMS norm subtracts no mean; write `bias = none`")
    if Store.MEAN in spec.store and not spec.is_layer:
        error("store", "store = mean needs norm = layer", "an RMS norm computes no mean; drop `mean` from store")
    if Store.RESIDUAL in spec.store:
        if not spec.has_residual:
            hint = "add `residual = pre` or drop `residual` from store"
            error("store", "store = residual needs a residual input", hint)
        elif ResidualMode.PRE not in spec.residual:
            error(
                "store",
                "store = residual needs residual = pre",
                "post mode writes no sum: its residual out is the normalized output",
            )
    return errors


def _modules(spec: NormSpec) -> list[str]:
    """The generated modules of one op."""
    modules = [names.op_module(spec), names.reference_module(spec)]
    return modules + [names.target_module(spec, target) for target in spec.targets]


def check_names(specs: list[NormSpec]) -> list[Diagnostic]:
    """Op names must be unique across all spec files, and so must the modules they generate."""
    errors, seen, owners = [], {}, {}
    for spec in specs:
        if spec.name in seen:
            first = seen[spec.name].span("op")
            hint = f"first defined at {first.path}:{first.line}"
            errors.append(Diagnostic(spec.span("op"), f"op '{spec.name}' is defined twice", hint))
            continue
        seen[spec.name] = spec
        for module in _modules(spec):
            other = owners.setdefault(module, spec)
            if other is not spec:
                where = other.span("op")
                errors.append(
                    Diagnostic(
                        spec.span("op"),
                        f"op '{spec.name}' would generate {module}.py, which op '{other.name}' generates too",
                        f"rename one of them (op '{other.name}' is at {where.path}:{where.line})",
                    )
                )
                break
    return errors
