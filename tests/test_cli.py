"""dsl/cli.py as an installed copy runs it (normgen-build): --out is required to write, --check only reads."""

import pytest

from dsl import cli, pipeline


@pytest.fixture
def installed(monkeypatch):
    monkeypatch.setattr(cli, "IN_CHECKOUT", False)


def test_writing_needs_out_outside_a_checkout(installed, capsys):
    before = sorted(p.name for p in pipeline.GENERATED.iterdir())
    with pytest.raises(SystemExit) as exit_:
        cli.main([], prog="normgen-build")
    assert exit_.value.code == 2
    assert "normgen-build: error: --out DIR is required outside a normgen checkout" in capsys.readouterr().err
    assert sorted(p.name for p in pipeline.GENERATED.iterdir()) == before


def test_check_and_list_need_no_out(installed, capsys):
    assert cli.main(["--check"]) == 0
    assert "generated is up to date" in capsys.readouterr().out
    assert cli.main(["--list"]) == 0


def test_tune_needs_a_checkout(installed, capsys):
    assert cli.main(["--tune", "cuda"]) == 2
    assert "--tune needs a source checkout" in capsys.readouterr().err


def test_a_user_folder_builds_with_out(installed, tmp_path):
    (tmp_path / "specs").mkdir()
    spec = "op mine {\n    norm = rms\n    targets = cuda\n}\n"
    (tmp_path / "specs" / "mine.norm").write_text(spec, encoding="utf-8")
    assert cli.main(["--specs", str(tmp_path / "specs"), "--out", str(tmp_path / "mine_pkg")]) == 0
    assert (tmp_path / "mine_pkg" / "mine.py").is_file()
    assert cli.main(["--specs", str(tmp_path / "specs"), "--out", str(tmp_path / "mine_pkg"), "--check"]) == 0


def _generated_files():
    return sorted((p.name, p.stat().st_mtime_ns) for p in pipeline.GENERATED.iterdir())


@pytest.mark.parametrize(
    "argv, message",
    [
        # in a checkout, --specs alone wrote DIR's ops into generated/ and removed the shipped ones
        (["--specs", "{specs}"], "--specs without --out would write your ops into generated/"),
        # the same by naming it: --out generated (a 2026-11-29 audit: it removed the shipped op modules)
        (["--specs", "{specs}", "--out", "{tmp}/generated"], "is the shipped generated/: your ops would replace"),
        (["--check", "--list"], "not allowed with argument"),  # --list ran, --check never did
        (["--tune", "cuda", "--check"], "not allowed with argument"),
        (["--tune", "cuda", "--out", "{tmp}/pkg"], "--tune writes the tuning file"),
        (["--tune", "npu", "--namespace", "mine"], "--tune writes the tuning file"),
        (["--out", ""], "empty (an unset variable?)"),  # Path("") is "." : the package went into the cwd
        (["--specs", " ", "--out", "{tmp}/pkg"], "empty (an unset variable?)"),
    ],
)
def test_command_lines_that_would_drop_a_flag_or_write_elsewhere_are_refused(
    argv, message, tmp_path, monkeypatch, capsys
):
    """Run where a regression could only write into tmp_path: the working directory and generated/ are
    stand-ins there (the code before these refusals wrote the package into both), and the tuners fail."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "mine.norm").write_text("op mine {\n    norm = rms\n    targets = cuda\n}\n")
    (tmp_path / "generated").mkdir()
    monkeypatch.setattr(pipeline, "GENERATED", tmp_path / "generated")
    monkeypatch.setattr(pipeline, "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)

    def no_tuning(*args, **kwargs):  # (on a GPU or NPU machine the tuner would rewrite dsl/tuning/)
        raise AssertionError("the tuner ran")

    from benchmarks import npu_tune, tune

    monkeypatch.setattr(tune, "tune", no_tuning)
    monkeypatch.setattr(npu_tune, "tune", no_tuning)
    before = _generated_files()
    with pytest.raises(SystemExit) as exit_:
        cli.main([a.format(specs=tmp_path / "specs", tmp=tmp_path) for a in argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert _generated_files() == before == [] and sorted(p.name for p in tmp_path.iterdir()) == ["generated", "specs"]


def test_a_tuning_file_error_is_an_input_error_naming_the_file(monkeypatch, tmp_path, capsys):
    """It was reported as an internal error (status 1), often without the file (KeyError: 'num_warps')."""
    from dsl.targets import cuda

    bad = tmp_path / "cuda.json"
    bad.write_text('{"ops": {"rmsnorm": {"best": [{"dtype": "bf16", "cols_hi": 8192, "rows_lo": 1}]}}}')
    monkeypatch.setattr(
        pipeline, "read_tuning", lambda: {pipeline.Target.CUDA: cuda.load_tuning(bad), pipeline.Target.NPU: None}
    )
    assert cli.main(["--check"]) == 2
    err = capsys.readouterr().err
    assert f"error: {bad}: rmsnorm bf16 cols_hi 8192 rows_lo 1: lacks block_m, num_warps, grid" in err


@pytest.mark.parametrize(
    ("out", "message"),
    [("", "is the checkout's (or installation's) root"), ("dsl/templates", "is inside the generator (dsl/)")],
)
def test_out_at_the_checkouts_root_or_in_the_generator_is_refused(out, message, tmp_path, monkeypatch, capsys):
    """The package's files were written there (a 2026-11-29 audit). Here ROOT is a stand-in in tmp_path."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "mine.norm").write_text("op mine {\n    norm = rms\n    targets = cuda\n}\n")
    (tmp_path / "dsl" / "templates").mkdir(parents=True)
    monkeypatch.setattr(pipeline, "ROOT", tmp_path)
    monkeypatch.setattr(pipeline, "GENERATED", tmp_path / "generated")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert cli.main(["--specs", str(tmp_path / "specs"), "--out", str(tmp_path / out)]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_out_at_a_symlink_loop_is_a_usage_error(tmp_path, capsys):
    """(an internal error, exit status 1, before)"""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "mine.norm").write_text("op mine {\n    norm = rms\n    targets = cuda\n}\n")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--specs", str(tmp_path / "specs"), "--out", str(tmp_path / "loop")])
    assert exit_.value.code == 2 and "loop is a symbolic link loop" in capsys.readouterr().err
