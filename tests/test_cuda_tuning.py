"""The cuda tuning file (dsl/tuning/cuda.json): a row may put a single-pass bucket on the multi-pass
kernel (its ``passes`` and ``block_n``), the planner follows it and refuses rows it cannot follow, and
a tuner run that measured some buckets keeps the others."""

import json

import pytest

from benchmarks import tuning_file
from benchmarks.calls import check, launcher_for, make_call
from dsl import pipeline, runtime
from dsl.model import DType, Target
from dsl.plan import Pass, plan
from dsl.targets import cuda

from .conftest import HAS_GPU

SPECS = {s.name: s for s in pipeline.load_specs(pipeline.SPECS)}


def row(cols_hi, rows_lo, block_m=1, num_warps=8, grid="tiles", dtype="bf16", **layout):
    return {"dtype": dtype, "cols_hi": cols_hi, "rows_lo": rows_lo, "block_m": block_m, "num_warps": num_warps,
            "grid": grid, **layout}  # fmt: skip


def tuning(*rows):
    return cuda.parse_tuning({"fallback": None, "ops": {"rmsnorm": {"best": list(rows)}}})


def entry(table, dtype, n_rows, n_cols):
    (e,) = [e for e in table if e.dtype is dtype and e.covers(n_rows, n_cols)]
    return e


def test_a_multi_pass_row_in_a_single_pass_bucket():
    table = plan(SPECS["rmsnorm"], Target.CUDA, tuning(
        row(8192, 1024, num_warps=16, passes="multi", block_n=4096),
        row(8192, 1, num_warps=4),
    )).table  # fmt: skip
    wide = entry(table, DType.BF16, 2048, 8192)
    assert (wide.passes, wide.block_n, wide.block_m, wide.num_warps) == (Pass.MULTI, 4096, 1, 16)
    assert (wide.cols_lo, wide.cols_hi, wide.rows_lo) == (4097, 8192, 1024)
    few = entry(table, DType.BF16, 64, 8192)  # the same bucket's other row range keeps the single pass
    assert (few.passes, few.block_n, few.num_warps) == (Pass.SINGLE, 8192, 4)
    assert entry(table, DType.BF16, 2048, 4096).passes is Pass.SINGLE  # the neighbour bucket is untouched
    assert entry(table, DType.FP32, 2048, 8192).passes is Pass.SINGLE  # and so is the other dtype


@pytest.mark.parametrize(
    "bad, message",
    [
        (row(8192, 1024, passes="multi"), "passes and block_n together"),
        (row(8192, 1024, block_n=4096), "passes and block_n together"),
        (row(8192, 1024, passes="single", block_n=4096), "whole row"),
        (row(8192, 1024, passes="multi", block_n=3000), "power of two"),
        (row(8192, 1024, passes="multi", block_n=8), "power of two"),
        (row(6000, 1024), "no width bucket"),
        (row(8192, 2000), "no row bucket starts at 2000"),
        # the split grid is the backward's: its column programs would write rows past the tensor
        (row(8192, 1024, grid="split"), "the forward's grids are tiles and persistent"),
        # a single pass in the open-ended bucket: a 4096-wide tile on rows of 40000 columns
        (row(None, 1, passes="single", block_n=4096), "whole row"),
        (row(8192, 1024, block_m=0), "block_m 0 is not a power of two"),
        (row(8192, 1024, block_m=3), "block_m 3 is not a power of two"),
        (row(128, 1024, block_m=32), "block_m 32 is not a power of two in 1..16"),
        (row(8192, 1024, block_m=8), "over 32768 elements"),
        (row(8192, 1024, num_warps=0), "num_warps 0"),
        (row(8192, 1024, num_warps=3), "num_warps 3"),
        (row(8192, 1024, num_warps=64), "num_warps 64"),
        (row(8192, 1024, num_warps=8.5), "num_warps must be a whole number"),
        (row(8192, 1024, num_warps="print('x') or 8"), "num_warps must be a whole number"),
        (row(8192, 1024, num_warps=True), "num_warps must be a whole number"),
        (row(4096.0, 1024), "cols_hi must be a whole number"),
        (row(8192, 1024, num_wraps=16), "unknown key 'num_wraps'"),
        ({"dtype": "bf16", "cols_hi": 8192, "rows_lo": 1, "block_m": 1, "grid": "tiles"}, "lacks num_warps"),
        (row(8192, 1024, grid="persistant"), "persistant"),
        (row(8192, 1024, passes="double", block_n=4096), "double"),
    ],
)
def test_rows_the_planner_cannot_follow_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        tuning(bad)


@pytest.mark.skipif(
    not ((runtime.INTERPRET and runtime.INTERPRET_TARGET == "cuda") or HAS_GPU), reason="the cuda kernels run"
)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_the_multi_pass_kernel_at_a_single_pass_width_is_right(dtype):
    """What such a row launches: add_rmsnorm's multi-pass kernel (with its eviction hints) over 3000
    columns in blocks of 2048 (a masked second block), 3 rows, checked against the generated reference."""
    spec = SPECS["add_rmsnorm"]
    launch = launcher_for("add_rmsnorm", dtype, "multi", 1, 2048, 4, "tiles")
    for mode in ("pre", "post"):
        call = make_call("add_rmsnorm", mode, 3, 3000, dtype, "cuda" if HAS_GPU else "cpu")
        launch(call["key"], False, 0, call["args"])
        check("add_rmsnorm", spec, call, mode)


def section(date, rows, complete=True):
    measurements = [{"dtype": r["dtype"], "cols_hi": r["cols_hi"], "rows_lo": r["rows_lo"], "cells": []} for r in rows]
    return {"date": date, "complete": complete, "best": rows, "measurements": measurements}


def test_a_run_over_some_buckets_keeps_the_others(tmp_path):
    path = tmp_path / "cuda.json"
    old = [row(4096, 1), row(4096, 1024), row(8192, 1), row(8192, 1024), row(None, 1)]
    path.write_text(
        json.dumps({"fallback": "rmsnorm", "ops": {"rmsnorm": section("old", old), "layernorm": section("x", old)}})
    )
    new = [row(8192, 1024, num_warps=16, passes="multi", block_n=4096)]
    data = tuning_file.merged(path, {"rmsnorm": section("new", new, complete=False)})
    best = data["ops"]["rmsnorm"]["best"]
    assert [(r["cols_hi"], r["rows_lo"]) for r in best] == [(4096, 1), (4096, 1024), (8192, 1), (8192, 1024), (None, 1)]
    assert [r.get("date") for r in best] == ["old", "old", "old", None, "old"]  # kept rows say when
    assert best[3]["passes"] == "multi" and best[3]["num_warps"] == 16  # the measured bucket replaced
    assert len(data["ops"]["rmsnorm"]["measurements"]) == 5
    assert data["ops"]["rmsnorm"]["complete"] is False and data["ops"]["rmsnorm"]["date"] == "new"
    assert data["ops"]["layernorm"] == section("x", old) and data["fallback"] == "rmsnorm"
    parsed = cuda.parse_tuning(json.loads(tuning_file.tuning_text(data)))  # the planner reads the result
    assert parsed["ops"]["rmsnorm"][DType.BF16, 8192, 1024] == (1, 16, cuda.Grid.TILES, Pass.MULTI, 4096)


def test_the_committed_file_parses():
    assert cuda.load_tuning()["ops"]


@pytest.mark.parametrize("op", sorted(SPECS))
def test_the_tuner_counts_the_bytes_the_benchmark_counts(op):
    """The tuner's rotation (as many input sets as bench.py's) starts from the bytes a launch moves,
    read off the call's tensors; bench.py's are benchmarks/ops.py's formula, written out per op."""
    from benchmarks import ops
    from benchmarks.calls import call_bytes

    if op not in ops.OPS or "cuda" not in [t.value for t in SPECS[op].targets]:
        pytest.skip(f"{op}: no formula in benchmarks/ops.py or no cuda kernels")
    modes = ["pre", "post"] if SPECS[op].has_residual else ["none"]
    for mode in modes:
        for dtype, elem in (("bf16", 2), ("fp32", 4)):
            call = make_call(op, mode, 3, 40, dtype, "cpu")
            want = ops.bytes_moved(op, mode if mode != "none" else "-", 3, 40, elem)
            assert call_bytes(call, mode) == want, (op, mode, dtype)


def test_the_tuner_measures_only_the_buckets_asked_for():
    """``--widths 8192 --rows 5000``: the one bucket of 4097-8192 columns from 1024 rows, timed at its
    row samples (1024 and 8192 rows) at 8192 columns and its ragged 6144, every mode of the op."""
    from benchmarks import tune

    (bucket,) = tune.buckets(SPECS["add_rmsnorm"], ["bf16"], False, [8192], [5000])
    assert (bucket.cols_lo, bucket.cols_hi, bucket.rows_lo, bucket.rows_hi) == (4097, 8192, 1024, None)
    cells = tune.cells(bucket, ["pre", "post"], False)
    assert sorted(cells) == sorted((m, r, c) for m in ("pre", "post") for r in (1024, 8192) for c in (8192, 6144))
    assert [b.rows_lo for b in tune.buckets(SPECS["add_rmsnorm"], ["bf16"], False, [8192])] == [1, 1024]
    (small,) = tune.buckets(SPECS["add_rmsnorm"], ["bf16"], False, [8192], [1, 1023])
    assert (small.rows_lo, small.rows_hi) == (1, 1023)


def test_a_second_row_for_one_bucket_is_refused():
    with pytest.raises(cuda.TuningError, match="a second row for this bucket"):
        tuning(row(8192, 1024, num_warps=8), row(8192, 1024, num_warps=16))


@pytest.mark.parametrize(
    "data, message",
    [
        ({"fallbak": "rmsnorm", "ops": {}}, "unknown key 'fallbak'"),
        ({"fallback": None, "ops": {"rmsnorm": {"best": [], "mesurements": []}}}, "unknown key 'mesurements'"),
        ({"fallback": None, "ops": {"rmsnorm": {}}}, "lacks best"),
        ({"fallback": "layernorm", "ops": {"rmsnorm": {"best": []}}}, "fallback op 'layernorm' has no measurements"),
        ({"fallback": [], "ops": {"rmsnorm": {"best": []}}}, r"fallback op \[\] has no measurements"),
        ({"fallback": None, "ops": {"rmsnorm": {"best": 5}}}, "best must be a list of rows"),
    ],
)
def test_sections_the_planner_cannot_follow_are_refused(data, message):
    with pytest.raises(cuda.TuningError, match=message):
        cuda.parse_tuning(data)


def test_a_file_with_a_key_twice_or_not_json_is_refused_naming_it(tmp_path):
    """json.loads keeps the last of two keys (a merge resolved badly); the reader refuses it."""
    path = tmp_path / "cuda.json"
    path.write_text('{"fallback": null, "ops": {"rmsnorm": {"best": [{"dtype": "bf16", "cols_hi": 8192, '
                    '"rows_lo": 1, "block_m": 1, "num_warps": 1, "num_warps": 32, "grid": "tiles"}]}}}')  # fmt: skip
    with pytest.raises(cuda.TuningError, match="'num_warps' appears twice"):
        cuda.load_tuning(path)
    path.write_text('{"fallback": null, "ops": {,}}')
    with pytest.raises(cuda.TuningError, match=f"{path}: not valid JSON"):
        cuda.load_tuning(path)
    # (both were internal errors, exit status 1, where a tuning file's mistake is an input error)
    path.write_bytes(b'{"fallback": "r\xe9sum\xe9"}')
    with pytest.raises(cuda.TuningError, match=f"{path}: not UTF-8 text \\(byte 0xe9"):
        cuda.load_tuning(path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(cuda.TuningError, match=f"{path}: its JSON nests too deep"):
        cuda.load_tuning(path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ops", "add_rmsnom"], "no op with a cuda target in the specs is named add_rmsnom"),
        (["--dtypes", "bf61"], "--dtypes: unknown bf61"),
        (["--widths", "4096,"], "give positive whole numbers"),
        (["--rows", "0"], "every value must be 1 or more"),
        (["--quick", "--widths", "300"], "(--quick: widths 128,1024,4096,8192) leave nothing to measure"),
        (["--rows", ""], "give positive whole numbers"),  # (an unset variable: it measured every row bucket)
    ],
)
def test_the_tuner_refuses_a_selection_that_measures_nothing(argv, message, tmp_path, capsys):
    """Such a run exited 0 after rewriting the ops' sections with today's date and this device, as if
    re-tuned (the file is the real one unless --out: here a copy)."""
    from benchmarks import tune

    out = tmp_path / "cuda.json"
    out.write_text(cuda.TUNING_FILE.read_text())
    with pytest.raises(SystemExit) as exit_:
        tune.main([*argv, "--out", str(out), *([] if "--ops" in argv else ["--ops", "add_rmsnorm"])])
    assert message in str(exit_.value.code) + capsys.readouterr().err
    assert out.read_text() == cuda.TUNING_FILE.read_text()


def test_the_committed_file_names_only_shipped_ops():
    """A section is keyed by its op's name: a misspelled one would leave the op on the fallback's configs
    (only the generated header's wording changed). User specs may have sections too, so this is a check
    of the committed file, not a refusal in the parser."""
    assert set(cuda.load_tuning()["ops"]) <= set(SPECS)


def test_the_tuner_skips_an_op_with_nothing_to_measure_and_tunes_the_others(tmp_path, monkeypatch, capsys):
    """A user op of fp16 only has no bucket under the default dtypes (bf16, fp32): it is skipped, saying so,
    and the run goes on with the others (here up to the GPU check, which this test makes fail)."""
    from benchmarks import tune

    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "ops.norm").write_text(
        "op mine_half {\n    norm = rms\n    targets = cuda\n    dtypes = fp16\n}\n"
        "op mine_all {\n    norm = rms\n    targets = cuda\n}\n"
    )
    monkeypatch.setattr(tune.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        tune.tune(tmp_path / "specs", tmp_path / "cuda.json")
    assert "tune: dtypes bf16,fp32 leave mine_half nothing to measure (its dtypes: see its spec); skipped" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "cuda.json").exists()
