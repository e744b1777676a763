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
