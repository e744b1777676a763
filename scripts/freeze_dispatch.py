"""Write tests/data/dispatch_decisions.json: every shipped kernel module's dispatch rows, per dtype.

    python scripts/freeze_dispatch.py

Run once, at the revision whose launch decisions are the reference (it was written from
cefb4cc, and rewritten after the 2026-11-27 retune of rmsnorm and gemma_rmsnorm at 2049-8192
columns, which changed those buckets' rows and no others, and after the cuda backward's split grid
below 512 rows, which changed the cuda backward tables' rows and no others, and after the layer norms'
cuda backward at 8193-16384 columns, and layernorm's forward retune there, which changed those rows
and no others, and after layernorm's cuda backward at exactly 16384 bf16 columns took the pipelined
single pass from 2048 rows, which changed that row and no other, and after fp32's cuda backward tiles of
256, 512 and 2048 columns took half the rows, which changed those fp32 rows and no others, and after
layernorm's fp32 forward at 16385-32768 columns took the tuner's multi-pass rows, which changed those,
and after rmsnorm's and gemma_rmsnorm's 16-bit cuda forward at exactly 8192 columns took the multi-pass
kernel from 4096 rows, which changed those rows and no others);
tests/test_dispatch_frozen.py then checks that the generated tables launch exactly the same way for
every (dtype, columns, rows).
Rerun it only on purpose: when a retune or a planner change is meant to change launches.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "dispatch_decisions.json"
FIELDS = (
    "cols_lo", "cols_hi", "rows_lo", "rows_hi", "passes", "block_m", "block_n", "num_warps", "grid",
    "multibuffer", "ub_bytes", "programs_per_core", "min_tiles", "stages", "align",
)  # fmt: skip


def kernel_tables() -> dict[str, object]:
    """'op/target/direction' -> the module's DispatchTable, for every shipped op and target."""
    from dsl import pipeline

    tables = {}
    for spec in pipeline.load_specs(pipeline.SPECS):
        for target in spec.targets:
            module = importlib.import_module(f"generated.{spec.name}_{target.value}")
            tables[f"{spec.name}/{target.value}/forward"] = module.TABLE
            if hasattr(module, "BACKWARD_TABLE"):
                tables[f"{spec.name}/{target.value}/backward"] = module.BACKWARD_TABLE
    return tables


def main() -> int:
    sys.path.insert(0, str(ROOT))
    frozen = {}
    for key, table in sorted(kernel_tables().items()):
        frozen[key] = {
            dtype: [[getattr(e, f) for f in FIELDS] for e in table.by_dtype[dtype]] for dtype in sorted(table.by_dtype)
        }
    text = json.dumps({"fields": FIELDS, "tables": frozen}, separators=(",", ":"))
    OUT.write_text(text.replace("],[", "],\n[") + "\n")
    print(f"{OUT.relative_to(ROOT)}: {len(frozen)} tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
