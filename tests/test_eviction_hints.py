"""Where the generated kernels carry L2 eviction hints (docs/bench/hints/): the cuda multi-pass
forward of the two-pass ops and every cuda multi-pass backward; pass 1's row loads keep their lines
(evict_last), the last pass's let them go (evict_first). Nothing else: no single-pass kernel, no
three-pass forward (layer norm, quantized: measured slower with them), no npu kernel."""

import ast
from pathlib import Path

import pytest

from dsl import pipeline

GENERATED = Path(__file__).resolve().parent.parent / "generated"
SPECS = {s.name: s for s in pipeline.load_specs(pipeline.SPECS)}
TWO_PASS_FORWARD = {"add_rmsnorm", "rmsnorm", "gemma_add_rmsnorm", "gemma_rmsnorm"}  # measured faster with them


def kernels(path: Path) -> dict[str, str]:
    """Each top-level function's source in a generated module."""
    text = path.read_text()
    return {
        node.name: ast.get_source_segment(text, node)
        for node in ast.parse(text).body
        if isinstance(node, ast.FunctionDef)
    }


def row_loads(source: str) -> list[str]:
    """The policies of the tile loads (rows × columns) that more than one pass makes, in order ('' where
    a load has none); the backward's ds, read once in pass 2, keeps the default."""
    policies = []
    for line in source.splitlines():
        if "tl.load(" in line and "rows[:, None]" in line and "DS_ptr" not in line:
            policies.append(line.split('eviction_policy="')[1].split('"')[0] if "eviction_policy" in line else "")
    return policies


@pytest.mark.parametrize("op", sorted(SPECS))
def test_cuda_kernels_hint_where_measured_faster(op):
    found = kernels(GENERATED / f"{op}_cuda.py")
    for name, source in found.items():
        if name.endswith("_single") or not name.startswith(op):
            assert "eviction_policy" not in source, name
    forward = row_loads(found[f"{op}_forward_multi"])
    if op in TWO_PASS_FORWARD:
        # pass 1 reads x (and r), the last pass reads them again
        half = len(forward) // 2
        assert forward == ["evict_last"] * half + ["evict_first"] * half and half, (op, forward)
    else:
        assert set(forward) == {""}, (op, forward)
    if f"{op}_backward_multi" in found:
        backward = row_loads(found[f"{op}_backward_multi"])
        half = len(backward) // 2
        assert backward == ["evict_last"] * half + ["evict_first"] * half and half, (op, backward)
    else:
        assert SPECS[op].quantize is not None or not SPECS[op].has_backward, op


@pytest.mark.parametrize(
    "op", sorted(name for name, spec in SPECS.items() if any(t.value == "npu" for t in spec.targets))
)
def test_npu_kernels_carry_no_hints(op):
    assert "eviction_policy" not in (GENERATED / f"{op}_npu.py").read_text()
