"""The npu tuning file (dsl/tuning/npu.json) and its writers (benchmarks/npu_tune.py): the planner follows
the file above 2048 columns, a file of the seed's choices is the seed's table, the committed file is the
defaults the compiler-fitted model gives, and choices from recorded NPU timings follow the timings (a
failed or impossible candidate stops the run). No NPU here: ``--tune npu`` must refuse."""

import json

import pytest

from benchmarks import npu_tune
from dsl import cli, pipeline
from dsl.model import DType, Target
from dsl.plan import Pass, plan
from dsl.targets import npu_tuning

SPECS = {s.name: s for s in pipeline.load_specs(pipeline.SPECS) if Target.NPU in s.targets}
SAMPLE_WIDTHS = (1, 128, 2048, 2049, 3000, 3072, 3073, 4095, 4096, 4097, 5000, 7168, 8191, 8192, 8193, 7338, 20000)
SAMPLE_ROWS = (1, 16, 17, 32, 33, 1000)


def decisions(kernel_plan, dtype):
    """(pass, BLOCK_M, BLOCK_N, multi-buffering, UB bytes) per sampled shape."""
    found = {}
    for n_cols in SAMPLE_WIDTHS:
        for n_rows in SAMPLE_ROWS:
            (e,) = [e for e in kernel_plan.table if e.dtype is dtype and e.covers(n_rows, n_cols)]
            found[n_rows, n_cols] = (e.passes, e.block_m, e.block_n_for(n_cols), e.multibuffer, e.ub_bytes)
    return found


def tuning_of(rows_by_op: dict) -> dict:
    return npu_tuning.parse_tuning({"ops": {op: {"best": rows} for op, rows in rows_by_op.items()}})


def seed_rows(spec) -> list[dict]:
    """The seed's choice in every bucket: the column loop (the first candidate)."""
    return [npu_tune.row(npu_tune.candidates(spec, b)[0]) for b in npu_tune.buckets(spec)]


@pytest.mark.parametrize("op", sorted(SPECS))
def test_a_file_of_the_seeds_choices_is_the_seed_table(op):
    spec = SPECS[op]
    seeded = plan(spec, Target.NPU, tuning_of({op: seed_rows(spec)}))
    untuned = plan(spec, Target.NPU, None)
    for dtype in spec.dtypes:
        assert decisions(seeded, dtype) == decisions(untuned, dtype), dtype
        assert all(e.passes is Pass.MULTI for e in seeded.table if e.cols_lo > 2048)


def test_the_planner_follows_the_file_above_2048():
    spec = SPECS["add_rmsnorm"]
    rows = seed_rows(spec)
    for r in rows:
        if r["dtype"] == "bf16" and r["cols_lo"] == 4096:
            r.update(passes="single", block_m=1, block_n=4096, multibuffer=False)
    table = plan(spec, Target.NPU, tuning_of({"add_rmsnorm": rows})).table
    (e,) = [e for e in table if e.dtype is DType.BF16 and e.covers(7, 4096)]
    assert (e.passes, e.block_m, e.block_n, e.multibuffer) == (Pass.SINGLE, 1, 4096, False)
    (e,) = [e for e in table if e.dtype is DType.BF16 and e.covers(7, 4097)]
    assert e.passes is Pass.MULTI
    other = plan(SPECS["rmsnorm"], Target.NPU, tuning_of({"add_rmsnorm": rows}))
    assert other.table == plan(SPECS["rmsnorm"], Target.NPU, None).table  # an op without a section: the seed's


def test_committed_file_is_the_defaults(tmp_path):
    committed = json.loads(npu_tuning.TUNING_FILE.read_text())
    if any(section.get("measurements") for section in committed["ops"].values()):
        pytest.skip("the committed file holds NPU measurements, not the defaults")
    out = npu_tune.defaults(None, tmp_path / "npu.json")
    assert out.read_text() == npu_tuning.TUNING_FILE.read_text(), "python -m benchmarks.npu_tune --defaults"


@pytest.mark.parametrize("dtype", [DType.BF16, DType.FP16])
@pytest.mark.parametrize("n_cols", [4096, 6144, 8192])
def test_committed_file_holds_wide_rows_whole(dtype, n_cols):
    """Issue #12: add_rmsnorm's 16-bit rows of 4096-8192 take one pass (x and r read once)."""
    kernel_plan = plan(SPECS["add_rmsnorm"], Target.NPU, pipeline.read_tuning()[Target.NPU])
    (e,) = [e for e in kernel_plan.table if e.dtype is dtype and e.covers(16, n_cols)]
    assert e.passes is Pass.SINGLE and e.block_n >= n_cols, e


def test_a_file_with_a_gap_or_a_short_single_pass_tile_is_refused():
    rows = seed_rows(SPECS["add_rmsnorm"])
    with pytest.raises(ValueError, match="not covered"):
        tuning_of({"add_rmsnorm": [r for r in rows if r["cols_lo"] != 4096]})
    short = [dict(r) for r in rows]
    for r in short:
        if r["cols_lo"] == 2049:
            r.update(passes="single", block_n=2048)
    with pytest.raises(ValueError, match="widest row"):
        tuning_of({"add_rmsnorm": short})
    # a bucket beyond the open one (8193..): accepted and never used (a 2026-11-29 audit)
    beyond = [dict(r, cols_lo=9000, cols_hi=9999) for r in rows if r["cols_lo"] == 8193]
    with pytest.raises(ValueError, match="widths 9000..9999 lie in the open bucket 8193.. \\(never used\\)"):
        tuning_of({"add_rmsnorm": rows + beyond})


def test_a_tile_over_the_unified_buffer_is_refused():
    rows = seed_rows(SPECS["add_rmsnorm"])
    for r in rows:
        if r["cols_lo"] == 8192:
            r.update(passes="single", block_m=16, block_n=8192)
    with pytest.raises(ValueError, match="over the 196608-byte unified buffer"):
        plan(SPECS["add_rmsnorm"], Target.NPU, tuning_of({"add_rmsnorm": rows}))


def recording(spec, fastest, error_for=None, extra=None) -> dict:
    """Timings of every candidate of every bucket: ``fastest(bucket, candidates)`` is the quickest by 20 %."""
    timings = []
    for bucket in npu_tune.buckets(spec):
        found = npu_tune.candidates(spec, bucket)
        winner = fastest(bucket, found)
        for choice in found:
            us = [(10.0 if choice == winner else 12.0) + i for i in range(len(npu_tune.cells(spec, bucket)))]
            record = {"op": spec.name, "candidate": npu_tune.row(choice), "us": us}
            if choice == error_for:
                record = {"op": spec.name, "candidate": npu_tune.row(choice), "error": "ACL error 507015"}
            timings.append(record)
    timings += extra or []
    return {"device": "recorded Ascend 910B (test data)", "date": "2026-11-26", "timings": timings}


def test_recorded_timings_choose_the_fastest(tmp_path):
    spec = SPECS["add_rmsnorm"]
    fastest = {}  # the last candidate of each bucket: a single pass with the fewest rows, where there is one

    def pick(bucket, found):
        fastest[bucket] = found[-1]
        return found[-1]

    path = tmp_path / "timings.json"
    path.write_text(json.dumps(recording(spec, pick)))
    out = npu_tune.from_recorded(path, tmp_path / "npu.json", ["add_rmsnorm"])
    data = json.loads(out.read_text())
    section = data["ops"]["add_rmsnorm"]
    assert section["device"] == "recorded Ascend 910B (test data)" and section["measurements"]
    assert [npu_tune.choice_of(r) for r in section["best"]] == [fastest[b] for b in npu_tune.buckets(spec)]
    assert any(c.passes is Pass.SINGLE for c in fastest.values())
    table = plan(spec, Target.NPU, npu_tuning.load_tuning(out)).table
    for bucket, choice in fastest.items():
        dtype, cols_lo, _, rows_lo, _, _ = bucket
        (e,) = [e for e in table if e.dtype is dtype and e.covers(rows_lo, cols_lo)]
        assert (e.passes, e.block_m, e.block_n, e.multibuffer) == choice[5:], bucket


def test_recorded_timings_keep_the_default_within_one_percent(tmp_path):
    spec = SPECS["add_rmsnorm"]
    bucket = npu_tune.buckets(spec)[0]
    found = npu_tune.candidates(spec, bucket)
    default = npu_tune.default(spec, bucket)
    other = next(c for c in found if c != default)
    times = {c: [10.0, 20.0] for c in found} | {other: [9.95, 19.9]}
    assert npu_tune.choose(spec, bucket, times) == default
    times[other] = [9.0, 18.0]
    assert npu_tune.choose(spec, bucket, times) == other


def test_a_failed_candidate_stops_the_run(tmp_path):
    spec = SPECS["add_rmsnorm"]
    bucket = npu_tune.buckets(spec)[1]
    broken = npu_tune.candidates(spec, bucket)[-1]
    path = tmp_path / "timings.json"
    path.write_text(json.dumps(recording(spec, lambda b, found: found[0], error_for=broken)))
    with pytest.raises(ValueError, match="failed: ACL error 507015"):
        npu_tune.from_recorded(path, tmp_path / "npu.json", ["add_rmsnorm"])
    assert not (tmp_path / "npu.json").exists()


def test_timings_of_an_impossible_or_missing_tile_stop_the_run(tmp_path):
    spec = SPECS["add_rmsnorm"]
    bucket = npu_tune.buckets(spec)[-2]  # 8192 columns
    impossible = npu_tune.candidates(spec, bucket)[0]._replace(passes=Pass.SINGLE, block_m=16, block_n=8192)
    extra = [{"op": spec.name, "candidate": npu_tune.row(impossible), "us": [1.0] * 8}]
    path = tmp_path / "timings.json"
    path.write_text(json.dumps(recording(spec, lambda b, found: found[0], extra=extra)))
    with pytest.raises(ValueError, match="not candidates"):
        npu_tune.from_recorded(path, tmp_path / "npu.json", ["add_rmsnorm"])
    data = recording(spec, lambda b, found: found[0])
    data["timings"] = data["timings"][1:]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no timings for"):
        npu_tune.from_recorded(path, tmp_path / "npu.json", ["add_rmsnorm"])


def test_tune_npu_refuses_without_an_npu(capsys):
    with pytest.raises(SystemExit, match="needs torch_npu and an Ascend NPU"):
        cli.main(["--tune", "npu"])


def test_cost_report_moves_no_more_than_the_seed():
    """Issue #12's done-when, read from the committed docs/npu/cost.md (the compiler's planned IR): for
    every seed shape, GM bytes per element no higher than the seed kernel's, and lower for bf16 and fp16
    rows of 4096-8192 in both modes."""
    from benchmarks import npu_cost

    rows = [line.split("|")[1:-1] for line in npu_cost.COST.read_text().splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in row] for row in rows if row[0].strip() in npu_cost.SEED_OPS]
    shapes = {(r[0], r[1], r[2], r[3]) for r in rows}
    dtypes = {"add_rmsnorm": ("fp32", "fp16", "bf16"), "gemma_add_rmsnorm": ("bf16",)}
    shapes_of = npu_cost.SEED_SHAPES + npu_cost.WIDE_SHAPES
    wanted = {(op, dtype, mode, f"{m}×{n}") for op in npu_cost.SEED_OPS for m, n in shapes_of
              for mode in ("pre", "post") for dtype in dtypes[op]}  # fmt: skip
    assert shapes == wanted
    for op, dtype, mode, shape, kernel, gm, seed, *_ in rows:
        n_cols = int(shape.split("×")[1])
        assert float(gm) <= float(seed), (op, dtype, mode, shape, kernel)
        if dtype in ("bf16", "fp16") and 4096 <= n_cols <= 8192:
            assert float(gm) < float(seed), (op, dtype, mode, shape, kernel)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"multibuffer": "false"}, "multibuffer must be true or false"),  # (the string was read as true)
        ({"block_m": 2.5}, "block_m must be a whole number"),
        ({"block_n": 4096.0}, "block_n must be a whole number"),
        ({"multi_buffer": False}, "unknown key 'multi_buffer'"),
        ({"passes": "double"}, "double"),
    ],
)
def test_rows_of_the_wrong_type_or_with_unknown_keys_are_refused(change, message):
    rows = seed_rows(SPECS["rmsnorm"])
    rows[0] = {**rows[0], **change}
    with pytest.raises(ValueError, match=message):
        tuning_of({"rmsnorm": rows})


def test_a_recording_with_timings_of_an_op_not_in_the_specs_is_refused(tmp_path, capsys):
    """Timings of ops the specs do not have were dropped without a word (or, with --specs, judged against
    the shipped specs'); now the run stops naming them."""
    spec = SPECS["rmsnorm"]
    data = recording(spec, lambda bucket, found: found[0])
    data["timings"].append({**data["timings"][0], "op": "mine_norm"})
    path = tmp_path / "recording.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="timings of mine_norm, not an npu op of these specs"):
        npu_tune.from_recorded(path, tmp_path / "npu.json", ["rmsnorm"])
    # on the command line: one line and status 2, not a traceback
    assert npu_tune.main(["--recorded", str(path), "--out", str(tmp_path / "npu.json")]) == 2
    assert "error: npu tune:" in capsys.readouterr().err and not (tmp_path / "npu.json").exists()


def test_the_committed_file_names_only_shipped_ops():
    """As for the cuda file: a misspelled section would leave its op on the seed's table above 2048."""
    assert set(npu_tuning.load_tuning()["ops"]) <= set(SPECS)


def test_a_file_error_names_the_file(tmp_path):
    """Messages said "npu tuning file", not which one."""
    path = tmp_path / "npu.json"
    path.write_text('{"ops": {"rmsnorm": {"best": 5}}}')
    with pytest.raises(ValueError, match=f"^{path}: rmsnorm: best must be a list of rows"):
        npu_tuning.load_tuning(path)


def test_a_recording_of_user_specs_is_chosen_with_their_folder(tmp_path):
    """`build.py --specs DIR --tune npu` records DIR's ops; `python -m benchmarks.npu_tune --recorded`
    had no --specs, so such a recording could not be chosen from again."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "mine.norm").write_text("op mine {\n    norm = rms\n    targets = npu\n}\n")
    (spec,) = pipeline.load_specs(tmp_path / "specs")
    path = tmp_path / "recording.json"
    path.write_text(json.dumps(recording(spec, lambda bucket, found: found[0])))
    out = tmp_path / "npu.json"
    argv = ["--recorded", str(path), "--specs", str(tmp_path / "specs"), "--out", str(out)]
    assert npu_tune.main(argv) == 0
    assert list(json.loads(out.read_text())["ops"]) == ["mine"]
