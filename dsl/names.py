"""Every generated name, computed here and nowhere else.

A kernel variant's canonical name is its Triton function name, its key in the
generated ``KERNELS`` map and its test id.
"""

from __future__ import annotations

from .model import NormSpec, ResidualMode, Target


def variant_name(
    spec: NormSpec, mode: ResidualMode | None, passes: str, row_mask: bool, col_mask: bool, grid: str
) -> str:
    """e.g. add_rmsnorm_pre_single_rowfull_colmask (one tile per program) or ..._persistent."""
    parts = [spec.name]
    if mode is not None:
        parts.append(mode.value)
    parts.append(passes)
    parts.append("rowmask" if row_mask else "rowfull")
    parts.append("colmask" if col_mask else "colfull")
    if grid == "persistent":
        parts.append("persistent")
    return "_".join(parts)


def op_module(spec: NormSpec) -> str:
    return spec.name


def target_module(spec: NormSpec, target: Target) -> str:
    return f"{spec.name}_{target.value}"


def reference_module(spec: NormSpec) -> str:
    return f"{spec.name}_reference"


def reference_function(spec: NormSpec) -> str:
    return f"{spec.name}_reference"


def custom_op(namespace: str, spec: NormSpec) -> str:
    return f"{namespace}::{spec.name}"


def module_class(spec: NormSpec) -> str:
    """The nn.Module wrapper: add_rmsnorm -> AddRMSNorm."""
    special = {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm", "rms": "RMS", "int8": "Int8", "fp8": "FP8"}
    return "".join(special.get(word, word.capitalize()) for word in spec.name.split("_"))
