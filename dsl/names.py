"""Every generated name, computed here and nowhere else.

A kernel's canonical name is its Triton function name and its test id.
"""

from __future__ import annotations

from .model import NormSpec, Target


def kernel_name(spec: NormSpec, direction: str, passes: str) -> str:
    """e.g. add_rmsnorm_forward_single: the op, the direction, the pass."""
    return f"{spec.name}_{direction}_{passes}"


def op_module(spec: NormSpec) -> str:
    return spec.name


def target_module(spec: NormSpec, target: Target) -> str:
    return f"{spec.name}_{target.value}"


def tables_module(target: Target) -> str:
    """The target's dispatch tables, shared by its kernel modules (no op name starts with _)."""
    return f"_{target.value}_tables"


def abi_module() -> str:
    """The kernels' target-neutral signatures, shared by every kernel module."""
    return "_abi"


def reference_module(spec: NormSpec) -> str:
    return f"{spec.name}_reference"


def reference_function(spec: NormSpec) -> str:
    return f"{spec.name}_reference"


def custom_op(namespace: str, spec: NormSpec) -> str:
    return f"{namespace}::{spec.name}"


def custom_op_names(spec: NormSpec) -> list[str]:
    """The torch.library op names an op registers in its package's namespace (dsl/custom_ops.py and
    dsl/backward.py spell the suffixes at registration): its own, with a residual the in-place one and
    one in-place op per residual mode, the backward where it has one."""
    inplace = [f"{spec.name}_inplace"] + [f"{spec.name}_inplace_{mode.value}" for mode in spec.residual]
    return [spec.name] + inplace * spec.has_residual + [f"{spec.name}_backward"] * spec.has_backward


def module_class(spec: NormSpec) -> str:
    """The nn.Module wrapper: add_rmsnorm -> AddRMSNorm."""
    return class_name(spec.name)


def class_name(op_name: str) -> str:
    """The nn.Module wrapper's name for an op name: add_rmsnorm -> AddRMSNorm."""
    special = {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm", "rms": "RMS", "int8": "Int8", "fp8": "FP8"}
    return "".join(special.get(word, word.capitalize()) for word in op_name.split("_"))
