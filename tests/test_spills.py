"""scripts/spills.py, the register-spill audit: its shapes land in the entries they stand for (CPU), and
what it reads of a compiled kernel is the driver's count: a kernel built to spill shows spills, a small
one none (gpu)."""

import importlib.util
import json
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


def _record(shape: str, spilled: int, kernel: str = "add_rmsnorm_fp8_forward_single", key: str = "") -> dict:
    return {
        "op": "add_rmsnorm_fp8",
        "direction": "forward",
        "dtype": "fp32",
        "mode": "pre",
        "entry": "cols 16385-32768, rows 1-None, single persistent, BLOCK 1x32768, 16 warps, 1 stages",
        "shape": shape,
        "kernel": kernel,
        "key": key or f"key of {shape}",
        "warps": 16,
        "regs": 128,
        "spills": spilled,
    }


def test_compare_lists_what_spills_more_than_before(tmp_path, capsys):
    """--compare with --records (two saved audits, no GPU): a launch that spills more, or newly spills where
    the audit before had no such launch, is listed and makes the exit status 1; one that spills as much,
    less or not at all is not."""
    before = [_record("1x32768", 78), _record("1x32760", 40), _record("1024x32768", 0), _record("2x64", 0)]
    after = [_record("1x32768", 354), _record("1x32760", 40), _record("1024x32768", 0), _record("2x64", 0)]
    after += [_record("4x64", 6), _record("8x64", 0)]  # launches the audit before did not make
    (tmp_path / "before.json").write_text(json.dumps(before))
    (tmp_path / "after.json").write_text(json.dumps(after))
    argv = ["--compare", str(tmp_path / "before.json"), "--records", str(tmp_path / "after.json")]
    assert spills.main(argv) == 1
    out = capsys.readouterr().out
    assert "2 of 6 specializations spill more (or newly)" in out
    assert "| 1x32768 | add_rmsnorm_fp8_forward_single | 78 | 354 |" in out
    assert "| 4x64 | add_rmsnorm_fp8_forward_single | - | 6 |" in out
    assert "1x32760" not in out and "1024x32768" not in out
    # less than before, or the same: nothing to list
    after[0]["spills"], after[4]["spills"] = 50, 0
    (tmp_path / "after.json").write_text(json.dumps(after))
    assert spills.main(argv) == 0
    assert "0 of 6 specializations" in capsys.readouterr().out
    # a dtype the audit before did not cover: counted apart, never listed
    after.append(dict(_record("1x32768", 500), dtype="bf16"))
    (tmp_path / "after.json").write_text(json.dumps(after))
    assert spills.main(argv) == 0
    out = capsys.readouterr().out
    assert "0 of 6 specializations spill more (or newly); 1 of ops and dtypes it did not audit" in out
    # --slack: growth up to that many bytes passes
    after[0]["spills"] = 80
    (tmp_path / "after.json").write_text(json.dumps(after))
    assert spills.main(argv) == 1 and spills.main([*argv, "--slack", "2"]) == 0
    capsys.readouterr()
    # --ops and --dtypes with --records: only their records are compared (they were ignored); one that
    # neither audit has is refused
    after[0]["spills"] = 78
    after.append(dict(_record("1x32768", 500), op="add_layernorm_fp8"))
    before.append(dict(_record("1x32768", 0), op="add_layernorm_fp8"))
    (tmp_path / "after.json").write_text(json.dumps(after))
    (tmp_path / "before.json").write_text(json.dumps(before))
    assert spills.main(argv) == 1 and "| add_layernorm_fp8 |" in capsys.readouterr().out
    assert spills.main([*argv, "--ops", "add_rmsnorm_fp8", "--dtypes", "fp32"]) == 0
    assert "0 of 6 specializations spill more (or newly)\n" in capsys.readouterr().out
    assert spills.main([*argv, "--ops", "add_layernorm_fp8"]) == 1
    assert "1 of 1 specializations spill more" in capsys.readouterr().out
    for wrong in (["--ops", "rmsnorm"], ["--dtypes", "fp16"]):
        with pytest.raises(SystemExit):
            spills.main([*argv, *wrong])
    with pytest.raises(SystemExit):
        spills.main(["--records", str(tmp_path / "after.json")])  # --records alone: refused
    with pytest.raises(SystemExit):
        spills.main(["--slack", "0", "--ops", "rmsnorm", "--dtypes", "bf16"])  # --slack without --compare, 0 too


def test_compare_matches_a_specialization_wherever_it_was_first_compiled(tmp_path, capsys):
    """The same specialization (op, dtype, kernel and Triton's key) first compiled at another shape or
    mode than in the audit before (an entry's range moved, or the calls' order) is the same launch: its
    growth is measured from its count before, not reported as new."""
    before = [_record("1x32768", 78, key="K1"), _record("1x32760", 0, key="K2")]
    after = [dict(_record("1x32000", 78, key="K1"), mode="post"), _record("1x32760", 0, key="K2")]
    (tmp_path / "before.json").write_text(json.dumps(before))
    (tmp_path / "after.json").write_text(json.dumps(after))
    argv = ["--compare", str(tmp_path / "before.json"), "--records", str(tmp_path / "after.json")]
    assert spills.main(argv) == 0, capsys.readouterr().out
    after[0]["spills"] = 80  # 2 bytes more than its 78 before, at its new shape
    (tmp_path / "after.json").write_text(json.dumps(after))
    assert spills.main([*argv, "--slack", "4"]) == 0
    assert spills.main(argv) == 1
    assert "| 1x32000 | add_rmsnorm_fp8_forward_single | 78 | 80 |" in capsys.readouterr().out
    # another key at the same shape is another specialization: new, listed where it spills
    after.append(_record("1x32760", 6, key="K3"))
    (tmp_path / "after.json").write_text(json.dumps(after))
    assert spills.main([*argv, "--slack", "4"]) == 1
    assert "| 1x32760 | add_rmsnorm_fp8_forward_single | - | 6 |" in capsys.readouterr().out
