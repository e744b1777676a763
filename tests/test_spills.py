"""scripts/spills.py, the register-spill audit: its shapes land in the entries they stand for (CPU), and
what it reads of a compiled kernel is the driver's count: a kernel built to spill shows spills, a small
one none (gpu)."""

import importlib.util
import sys
from pathlib import Path

import pytest

from benchmarks import ops

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("spills", ROOT / "scripts" / "spills.py")
spills = importlib.util.module_from_spec(_spec)
sys.modules["spills"] = spills
_spec.loader.exec_module(spills)


@pytest.mark.parametrize("op", list(ops.OPS))  # the ops the audit goes through
def test_audit_shapes_launch_the_entry_they_stand_for(op):
    """Every cuda dispatch entry of both directions gets shapes whose lookup is that entry: its widest
    columns and, where the entry has them, a width 8 narrower and a row count with the row mask."""
    module = importlib.import_module(f"generated.{op}_cuda")
    tables = [module.LAUNCHER.table] + (
        [module.BACKWARD_LAUNCHER.table] if hasattr(module, "BACKWARD_LAUNCHER") else []
    )
    for table in tables:
        for entry in table.entries:
            shapes = spills.shapes(entry)
            assert shapes, entry
            for rows, cols in shapes:
                assert table.lookup(entry.dtype, rows, cols) == entry, (entry, rows, cols)
            if entry.cols_hi is None or entry.cols_hi - 8 >= entry.cols_lo:  # room for a narrower width
                assert len({cols for _, cols in shapes}) == 2, (entry, shapes)
            if entry.block_m > 1 and (entry.rows_hi is None or entry.rows_lo < entry.rows_hi):
                assert any(rows % entry.block_m for rows, _ in shapes), (entry, shapes)


@pytest.mark.gpu
def test_spill_count_is_the_drivers():
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def hold(X, Y, N: tl.constexpr):
        offs = tl.arange(0, N)
        x = tl.load(X + offs)
        # x stays live across the row's sum and is read reversed: N / (32 * num_warps) values a thread
        y = x * tl.sum(x * x, axis=0) + tl.flip(x, 0)
        tl.store(Y + offs, y)

    for n, warps in ((1024, 4), (16384, 1)):
        x = torch.randn(n, device="cuda")
        y = torch.empty_like(x)
        hold[(1,)](x, y, N=n, num_warps=warps)
    torch.cuda.synchronize()
    found = {kernel.metadata.num_warps: kernel for kernel in spills.compiled([hold]).values()}
    assert found[4].n_spills == 0, found[4].n_spills  # 8 values a thread
    assert found[1].n_spills > 0, found[1].n_regs  # 512 values a thread: more than 255 registers hold
