"""Hostile inputs to build.py (issue 9, items 6-13): every case is refused with a
positioned error or a one-line error and exit status 2, never a traceback and never
a silent success; what --out holds is never touched unless the build wrote it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import build
from dsl import emit, pipeline, render

OK_SPEC = "op tiny { norm = rms\n targets = cuda\n dtypes = fp32 }\n"


def run(capsys, *args: str) -> tuple[int, str, str]:
    """build.main in this process; (status, stdout, stderr)."""
    status = build.main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


def build_specs(tmp_path: Path, capsys, files: dict[str, str | bytes], *extra: str) -> tuple[int, str]:
    """Write spec files into tmp_path/specs and build them into tmp_path/out; (status, stderr)."""
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    for name, text in files.items():
        path = specs / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    os.chdir(tmp_path)
    status, _, err = run(capsys, "--specs", "specs", "--out", "out", "--namespace", "ns", *extra)
    return status, err


@pytest.fixture(autouse=True)
def _keep_cwd():
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


# -- spec files: one positioned error each (path:line:col, the line, a caret) ---------

# (id, spec text, the first line of the error, more text the error must hold)
SPEC_CASES = [
    # item 6: bytes that are not text
    ("not_utf8", b"op a {\n norm = rms\xff }\n", "bad.norm:2:12: error: the file is not valid UTF-8", "byte 0xff"),
    (
        "bom",
        b"\xef\xbb\xbfop a { norm = rms }\n",
        "bad.norm:1:1: error: the file starts with a byte order mark",
        "hint",
    ),
    ("nul_byte", "op a { norm = rms\x00 }\n", "bad.norm:1:18: error: ", "found '\\x00'"),
    # item 6: an op name too long to be a file name
    ("long_name", "op " + "a" * 300 + " { norm = rms }\n", "bad.norm:1:4: error: op name is 300 characters long", "64"),
    # item 9: op names that break the generated code
    ("keyword", "op import { norm = rms }\n", "bad.norm:1:4: error: op name 'import' is a Python keyword", ""),
    ("soft_keyword", "op match { norm = rms }\n", "bad.norm:1:4: error: op name 'match' is a Python keyword", ""),
    ("builtin_iter", "op iter { norm = rms }\n", "bad.norm:1:4: error: op name 'iter' shadows the Python builtin", ""),
    # custom op names: torch.ops.NS.name is torch's; an op's in-place and backward ops are its own
    ("torch_ops_name", "op name { norm = rms }\n", "bad.norm:1:4: error: op name 'name' is reserved", "torch's own"),
    (
        "inplace_op_clash",
        "op foo { norm = rms\n residual = pre }\nop foo_inplace { norm = rms }\n",
        "bad.norm:3:4: error: op 'foo_inplace' would register the custom op foo_inplace, which op 'foo' registers too",
        "bad.norm:1",
    ),
    (
        "inplace_mode_op_clash",
        "op foo { norm = rms\n residual = pre, post }\nop foo_inplace_post { norm = rms }\n",
        "bad.norm:3:4: error: op 'foo_inplace_post' would register the custom op foo_inplace_post, which op 'foo' "
        "registers too",
        "bad.norm:1",
    ),
    (
        "backward_op_clash",
        "op bar_backward { norm = rms }\nop bar { norm = rms }\n",
        "bad.norm:2:4: error: op 'bar' would register the custom op bar_backward, which op 'bar_backward' registers",
        "",
    ),
    # a module's initial weight 1 - offset that bf16 rounds: the scale would start at 0
    (
        "offset_init_bf16",
        "op a { norm = rms\n weight = scale + 1000\n dtypes = bf16 }\n",
        "bad.norm:2:2: error: the initial weight 1 - 1000 is -1000 in bf16",
        "would start at 0, not 1",
    ),
    # the module class of o_p is OP, the op module's descriptor
    ("class_op", "op o_p { norm = rms }\n", "bad.norm:1:4: error: op 'o_p' would generate the module class OP", ""),
    ("builtin_next", "op next { norm = rms }\n", "bad.norm:1:4: error: op name 'next' shadows the Python builtin", ""),
    ("builtin_super", "op super { norm = rms }\n", "bad.norm:1:4: error: op name 'super' shadows", ""),
    ("builtin_list", "op list { norm = rms }\n", "bad.norm:1:4: error: op name 'list' shadows", ""),
    ("builtin_float", "op float { norm = rms }\n", "bad.norm:1:4: error: op name 'float' shadows", ""),
    ("builtin_type", "op type { norm = rms }\n", "bad.norm:1:4: error: op name 'type' shadows", ""),
    ("module_name", "op torch { norm = rms }\n", "bad.norm:1:4: error: op name 'torch' is reserved", ""),
    ("parameter_name", "op x { norm = rms }\n", "bad.norm:1:4: error: op name 'x' is reserved", "generated code"),
    ("parameter_eps", "op eps { norm = rms }\n", "bad.norm:1:4: error: op name 'eps' is reserved", ""),
    ("upper_case", "op RMS { norm = rms }\n", "bad.norm:1:4: error: op name 'RMS' is not a valid", "lower case"),
    # (a 2026-11-29 audit) names whose module class is a keyword: the package was written and did not import
    ("class_none", "op none { norm = rms }\n", "bad.norm:1:4: error: op name 'none' makes the module class 'None'", ""),
    ("class_true", "op true { norm = rms }\n", "bad.norm:1:4: error: op name 'true' makes the module class 'True'", ""),
    # line breaks the parser does not see: a comment ran on over the next setting, which was left unset
    (
        "comment_to_lone_cr",
        "op a {\n norm = rms # c\r eps = 1e-3\n}\n",
        "bad.norm:2:16: error: the file has a carriage return without a newline",
        "end lines with \\n",
    ),
    ("lone_cr_lines", "op a {\r norm = rms\r}\r", "bad.norm:1:7: error: the file has a carriage return", ""),
    ("line_separator", "op a {\n norm = rms\u2028 eps = 1\n}\n", "bad.norm:2:12: error: the file has a line sep", ""),
    ("form_feed", "op a {\n norm = rms\x0c\n}\n", "bad.norm:2:12: error: the file has a form feed", ""),
    ("next_line", "op a {\n norm = rms\x85\n}\n", "bad.norm:2:12: error: the file has a next-line character", ""),
    # digits of other scripts: \d took them, and the fp32 range check did not see them as digits
    ("fullwidth_digit", "op a {\n eps = \uff11e-45\n norm = rms\n}\n", "bad.norm:2:8: error: ", "digits 0-9"),
    # item 10: no ops at all
    ("empty", "", "bad.norm:1:1: error: the file defines no ops", "op NAME"),
    ("comment_only", "# nothing here\n\n# at all\n", "bad.norm:1:1: error: the file defines no ops", ""),
    ("blank_only", "\n\n   \n", "bad.norm:1:1: error: the file defines no ops", ""),
    # item 11: numbers that do not survive fp32
    ("eps_overflow", "op a { norm = rms\n eps = 1e39 }\n", "bad.norm:2:8: error: eps 1e39 is out of fp32's range", ""),
    ("eps_denormal", "op a { norm = rms\n eps = 1e-40 }\n", "bad.norm:2:8: error: eps 1e-40 is too small for fp32", ""),
    (
        "eps_underflow",
        "op a { norm = rms\n eps = 1e-400 }\n",
        "bad.norm:2:8: error: eps 1e-400 is too small for fp32",
        "",
    ),
    ("eps_huge", "op a { norm = rms\n eps = 1e400 }\n", "bad.norm:2:8: error: eps 1e400 is out of fp32's range", ""),
    (
        "offset_overflow",
        "op a { norm = rms\n weight = scale + 1e300 }\n",
        "bad.norm:2:11: error: the weight offset 1e300 is out of fp32's range",
        "",
    ),
    (
        "offset_underflow",
        "op a { norm = rms\n weight = scale + 1e-400 }\n",
        "bad.norm:2:11: error: the weight offset 1e-400 is too small for fp32",
        "",
    ),
    (
        "offset_negative_overflow",
        "op a { norm = rms\n weight = scale + -4e38 }\n",
        "bad.norm:2:11: error: the weight offset -4e38 is out of fp32's range",
        "",
    ),
    # item 13: hints that do not mislead
    (
        "gpu_target",
        "op a { norm = rms\n targets = cuda, gpu }\n",
        "bad.norm:2:18: error: unknown targets 'gpu'",
        "cuda",
    ),
    ("nvidia_target", "op a { norm = rms\n targets = nvidia }\n", "bad.norm:2:12: error: unknown targets 'nvidia'", ""),
]


@pytest.mark.parametrize(("text", "first", "more"), [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_hostile_spec_is_a_positioned_error(tmp_path, capsys, text, first, more):
    status, err = build_specs(tmp_path, capsys, {"bad.norm": text})
    assert status == 2, err
    assert err.startswith("specs/" + first), err
    assert more in err
    assert err.rstrip().splitlines()[-1].endswith("error") or err.rstrip().endswith("errors")
    assert not (tmp_path / "out").exists()


def test_hint_for_gpu_does_not_suggest_npu(tmp_path, capsys):
    status, err = build_specs(tmp_path, capsys, {"bad.norm": "op a { norm = rms\n targets = cuda, gpu }\n"})
    assert status == 2
    assert "npu" not in err.split("hint:")[1].split("allowed")[0]
    assert "'gpu' is not a target name: NVIDIA and AMD GPUs are the 'cuda' target" in err


def test_hint_for_a_keyword_op_says_keyword(tmp_path, capsys):
    status, err = build_specs(tmp_path, capsys, {"bad.norm": "op import { norm = rms }\n"})
    assert status == 2
    assert "keyword" in err and "lower case" not in err


def test_ops_whose_module_classes_collide_are_errors_at_both(tmp_path, capsys):
    text = "op rmsnorm { norm = rms }\nop rms_norm { norm = rms }\n"
    status, err = build_specs(tmp_path, capsys, {"a.norm": text})
    assert status == 2
    assert "a.norm:1:4: error: op 'rmsnorm' and op 'rms_norm' both generate the module class RMSNorm" in err
    assert "a.norm:2:4: error: op 'rms_norm' and op 'rmsnorm' both generate the module class RMSNorm" in err


# -- item 12: every error at once, bounded, linear ------------------------------------


def test_contradictions_are_not_hidden_behind_a_bad_value(tmp_path, capsys):
    text = "op a {\n norm = rms\n weight = none + 1.0\n bias = shift\n store = mean\n}\n"
    status, err = build_specs(tmp_path, capsys, {"a.norm": text})
    assert status == 2
    assert "a.norm:3:11: error: an offset needs a weight to add to" in err
    assert "a.norm:4:2: error: bias = shift needs norm = layer" in err
    assert "a.norm:5:2: error: store = mean needs norm = layer" in err
    assert err.rstrip().endswith("3 errors")


def test_a_duplicated_key_does_not_hide_a_duplicate_op_elsewhere(tmp_path, capsys):
    files = {"a.norm": "op a { norm = rms\n norm = rms }\n", "b.norm": "op a { norm = rms }\n"}
    status, err = build_specs(tmp_path, capsys, files)
    assert status == 2
    assert "a.norm:2:2: error: 'norm' is set twice" in err
    assert "b.norm:1:4: error: op 'a' is defined twice" in err


def test_ten_thousand_errors_are_fast_and_bounded(tmp_path, capsys):
    text = "op a { norm = rms\n" + "bogus = 1\n" * 10_000 + "}\n"
    start = time.perf_counter()
    status, err = build_specs(tmp_path, capsys, {"a.norm": text})
    assert time.perf_counter() - start < 10
    assert status == 2
    assert err.count(": error: ") == 50
    assert "a.norm: 9950 more errors not shown" in err
    assert err.rstrip().endswith("10000 errors")


def test_two_thousand_duplicate_values_give_little_output(tmp_path, capsys):
    text = "op a { norm = rms\n dtypes = " + ", ".join(["fp32"] * 2000) + " }\n"
    status, err = build_specs(tmp_path, capsys, {"a.norm": text})
    assert status == 2
    assert len(err) < 50_000
    assert "a.norm:2:17: error: dtypes lists 'fp32' twice" in err
    assert err.rstrip().endswith("1999 errors")


def test_errors_of_every_file_are_each_bounded(tmp_path, capsys):
    bad = "op a { norm = rms\n" + "bogus = 1\n" * 60 + "}\n"
    status, err = build_specs(tmp_path, capsys, {"a.norm": bad, "b.norm": bad.replace("op a", "op b")})
    assert status == 2
    assert err.count(": error: ") == 100
    assert "a.norm: 10 more errors not shown" in err and "b.norm: 10 more errors not shown" in err


# -- items 6, 13: the command line ---------------------------------------------------


def test_specs_naming_a_file(tmp_path, capsys):
    (tmp_path / "a.norm").write_text(OK_SPEC, encoding="utf-8")
    status, _, err = run(capsys, "--specs", str(tmp_path / "a.norm"), "--out", str(tmp_path / "out"))
    assert status == 2
    assert err.startswith("error: --specs ") and "is a file, not a folder" in err and err.count("\n") == 1


def test_specs_naming_a_missing_folder(tmp_path, capsys):
    status, _, err = run(capsys, "--specs", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert status == 2
    assert "does not exist" in err and err.count("\n") == 1


def test_a_folder_named_like_a_spec(tmp_path, capsys):
    (tmp_path / "specs" / "x.norm").mkdir(parents=True)
    (tmp_path / "specs" / "ok.norm").write_text(OK_SPEC, encoding="utf-8")
    status, err = build_specs(tmp_path, capsys, {})
    assert status == 2
    assert "x.norm is a folder, not a spec file" in err


def test_a_spec_file_that_is_a_symlink_loop(tmp_path, capsys):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "loop.norm").symlink_to("loop.norm")
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 2
    assert err.startswith("specs/loop.norm: error: cannot read the file: ")


def test_the_output_does_not_depend_on_the_working_directory(tmp_path, capsys):
    """Headers name a spec outside this checkout by its folder and file (specs/ok.norm), not from the
    working directory: a check from elsewhere finds the package up to date."""
    assert build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})[0] == 0
    assert (
        (tmp_path / "out" / "tiny.py")
        .read_text(encoding="utf-8")
        .startswith("# Generated by normgen from specs/ok.norm with")
    )
    os.chdir(tmp_path.parent)
    where = tmp_path.name
    status, _, err = run(capsys, "--specs", f"{where}/specs", "--out", f"{where}/out", "--namespace", "ns", "--check")
    assert status == 0, err
    (tmp_path / "specs" / "ok.norm").write_text(OK_SPEC.replace("fp32", "fp16"), encoding="utf-8")
    status, _, err = run(capsys, "--specs", f"{where}/specs", "--out", f"{where}/out", "--namespace", "ns", "--check")
    assert status == 1 and "run `python build.py with the same --specs, --out and --namespace`" in err, err


def test_hidden_spec_files_are_not_read(tmp_path, capsys):
    """An editor's lock file (a dangling link), a hidden copy and macOS's ._ file are not specs."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / ".#ok.norm").symlink_to("root@host.1234:1700000000")
    (specs / ".ok.norm").write_text(OK_SPEC, encoding="utf-8")
    (specs / "._ok.norm").write_bytes(b"\x00\x05\x16\x07")
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 0, err


def test_a_dangling_spec_link_is_named_by_its_own_name(tmp_path, capsys):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "gone.norm").symlink_to("elsewhere/target.norm")
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 2
    assert err.startswith("specs/gone.norm: error: cannot read the file: "), err


def test_a_spec_file_that_is_a_fifo(tmp_path, capsys):
    specs = tmp_path / "specs"
    specs.mkdir()
    os.mkfifo(specs / "pipe.norm")
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 2
    assert err.startswith("specs/pipe.norm: error: pipe.norm is not a regular file")


def test_a_spec_file_name_that_is_not_utf8(tmp_path, capsys):
    specs = tmp_path / "specs"
    specs.mkdir()
    try:
        (specs / os.fsdecode(b"x\xff.norm")).write_text(OK_SPEC, encoding="utf-8")
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take non-UTF-8 names")
    status, err = build_specs(tmp_path, capsys, {})
    assert status == 2
    assert "file name is not valid UTF-8" in err and "x\\xff.norm" in err
    assert not (tmp_path / "out").exists()


def test_out_naming_a_file(tmp_path, capsys):
    (tmp_path / "out").write_text("hello", encoding="utf-8")
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 2
    assert "--out out is a file, not a folder" in err and err.count("\n") == 1
    assert (tmp_path / "out").read_text(encoding="utf-8") == "hello"


@pytest.mark.parametrize(
    "namespace",
    ["class", 'x"y', "my-ns", "a.b", "", "1abc", "ns\nimport os", "aten", "é", "load_library", "_dir", "__name__"]
    + ["sparse", "c10d", "quantization"],  # (torch's too: a 2026-11-29 audit found them accepted)
)
def test_bad_namespace(tmp_path, capsys, namespace):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "ok.norm").write_text(OK_SPEC, encoding="utf-8")
    os.chdir(tmp_path)
    status, _, err = run(capsys, "--specs", "specs", "--out", "out", "--namespace", namespace)
    assert status == 2
    assert err.startswith("error: --namespace ") and err.count("\n") == 1
    reasons = ("is not a Python identifier", "keyword", "PyTorch's own", "attribute of torch.ops", "starts with '_'")
    assert any(words in err for words in reasons)
    assert not (tmp_path / "out").exists()


def test_default_namespace_from_a_folder_name_that_is_no_identifier(tmp_path, capsys):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "ok.norm").write_text(OK_SPEC, encoding="utf-8")
    os.chdir(tmp_path)
    status, _, err = run(capsys, "--specs", "specs", "--out", "my-pkg")
    assert status == 2
    assert "'my-pkg'" in err and "pass --namespace" in err
    assert not (tmp_path / "my-pkg").exists()


def test_an_internal_error_is_one_line_that_mentions_debug(tmp_path, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("something broke")

    monkeypatch.setattr(pipeline, "generate", boom)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "ok.norm").write_text(OK_SPEC, encoding="utf-8")
    os.chdir(tmp_path)
    status, _, err = run(capsys, "--specs", "specs", "--out", "out", "--namespace", "ns")
    assert status == 1
    assert err.count("\n") == 1 and "something broke" in err and "--debug" in err


# -- item 8: --out holds only what the build wrote --------------------------------------


@pytest.mark.parametrize("name", ["__init__.py", "tiny.py", "tiny_reference.py"])
def test_hand_written_files_in_out_are_not_overwritten(tmp_path, capsys, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("# mine\nVALUE = 1\n", encoding="utf-8")
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 2
    assert f"out/{name}" in err and "not generated by normgen" in err
    assert (out / name).read_text(encoding="utf-8") == "# mine\nVALUE = 1\n"
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing else written either


def test_a_non_utf8_or_folder_py_in_out(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "other.py").write_bytes(b"\xff\xfe junk")
    (out / "tiny.py").mkdir()
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 2
    assert "out/tiny.py" in err and "other.py" not in err
    assert (out / "other.py").read_bytes() == b"\xff\xfe junk"
    (out / "tiny.py").rmdir()
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 0, err
    assert (out / "other.py").read_bytes() == b"\xff\xfe junk"  # not ours: left alone


LOOKS_GENERATED = render.header(["specs/x.norm"], "op.py.jinja") + "\n"


def test_a_symlink_in_out_is_refused(tmp_path, capsys):
    outside = tmp_path / "outside.py"
    outside.write_text(LOOKS_GENERATED, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "tiny.py").symlink_to(outside)
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 2
    assert "out/tiny.py is a symbolic link" in err
    assert outside.read_text(encoding="utf-8") == LOOKS_GENERATED


def test_a_stale_symlink_is_not_deleted(tmp_path, capsys):
    outside = tmp_path / "outside.py"
    outside.write_text(LOOKS_GENERATED, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "gone.py").symlink_to(outside)
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 2
    assert "out/gone.py is a symbolic link" in err
    assert (out / "gone.py").is_symlink() and outside.exists()


def test_nothing_is_written_when_a_write_fails(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "specs" / "ok.norm").write_text(OK_SPEC.replace("fp32", "fp16"), encoding="utf-8")
    real = emit._write_temp
    calls = []

    def failing(out_, name, text):
        calls.append(name)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(out_, name, text)

    monkeypatch.setattr(emit, "_write_temp", failing)
    status, err = build_specs(tmp_path, capsys, {})
    assert status == 2 and "disk full" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp files, nothing half-written


def test_a_failed_rename_leaves_no_temporary_file_and_the_old_init(tmp_path, capsys, monkeypatch):
    """Renames go modules first, the package's __init__.py after them: a build that fails between two
    renames leaves an __init__.py whose modules are all there, and no temporary file."""
    out = tmp_path / "out"
    assert build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})[0] == 0
    init = (out / "__init__.py").read_bytes()
    (tmp_path / "specs" / "ok.norm").write_text(OK_SPEC.replace("tiny", "small"), encoding="utf-8")
    real, calls = emit._replace, []

    def failing(temp, target):
        calls.append(target.name)
        if len(calls) == 2:
            raise OSError("disk full")
        real(temp, target)

    monkeypatch.setattr(emit, "_replace", failing)
    status, err = build_specs(tmp_path, capsys, {})
    assert status == 2 and "disk full" in err
    assert "__init__.py" not in calls and (out / "__init__.py").read_bytes() == init
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_stale_file_already_removed_is_no_error(tmp_path, capsys, monkeypatch):
    """Two builds of the same specs at once: the other may remove a stale file first."""
    out = tmp_path / "out"
    assert build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})[0] == 0
    (tmp_path / "specs" / "ok.norm").write_text(OK_SPEC.replace("tiny", "small"), encoding="utf-8")
    real = emit._replace

    def and_the_other_build(temp, target):
        real(temp, target)
        (out / "tiny.py").unlink(missing_ok=True)

    monkeypatch.setattr(emit, "_replace", and_the_other_build)
    status, err = build_specs(tmp_path, capsys, {})
    assert status == 0, err
    assert not (out / "tiny.py").exists() and (out / "small.py").exists()


@pytest.mark.parametrize("name", ["Helpers.py", "notes.py"])
def test_a_file_that_only_starts_like_a_header_is_left_alone(tmp_path, capsys, name):
    """Only a name the build can generate with both header lines is the build's to remove."""
    out = tmp_path / "out"
    out.mkdir()
    text = "# Generated by normgenerator-tools v2; maintained by hand\nX = 1\n"
    (out / name).write_text(text, encoding="utf-8")
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 0, err
    assert (out / name).read_text(encoding="utf-8") == text


@pytest.mark.parametrize(
    "shadow", ["tiny/__init__.py", "a link to a package", "tiny.cpython-311-x86_64-linux-gnu.so", "tiny.abi3.so"]
)
def test_what_python_would_import_instead_of_a_module_is_refused(tmp_path, capsys, shadow):
    """A package folder (or a link to one) or an extension module named like a generated module:
    Python imports it instead. A folder without __init__ is no package and does not shadow."""
    import importlib.machinery

    out = tmp_path / "out"
    out.mkdir()
    if shadow.endswith(".so"):
        if not any(shadow.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES):
            pytest.skip(f"{shadow}: not an extension suffix of this Python")
        (out / shadow).write_bytes(b"")
    else:
        package = out / "tiny" if shadow == "tiny/__init__.py" else tmp_path / "elsewhere"
        package.mkdir()
        (package / "__init__.py").write_text("", encoding="utf-8")
        if package.name == "elsewhere":
            (out / "tiny").symlink_to(package)
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 2, err
    assert "Python would import instead of the generated tiny.py" in err
    assert not (out / "tiny.py").exists()


def test_a_folder_that_is_no_package_does_not_shadow_a_module(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "tiny").mkdir(parents=True)
    status, err = build_specs(tmp_path, capsys, {"ok.norm": OK_SPEC})
    assert status == 0, err
    assert (out / "tiny.py").is_file()


def test_a_spec_that_fails_writes_nothing(tmp_path, capsys):
    files = {"ok.norm": OK_SPEC, "long.norm": "op " + "b" * 300 + " { norm = rms }\n"}
    status, _ = build_specs(tmp_path, capsys, files)
    assert status == 2
    assert not (tmp_path / "out").exists()


# -- item 7: text from outside is escaped in the generated files ------------------------


@pytest.mark.parametrize(
    "name",
    ['x"""y.norm', "x\nimport os; os._exit(7)\n.norm", "x\\n.norm", "x'''.norm", "é ü.norm", "x\r.norm"],
    ids=["triple_quote", "newline", "backslash", "single_quotes", "non_ascii", "carriage_return"],
)
def test_a_hostile_spec_file_name_cannot_inject_code(tmp_path, capsys, name):
    try:
        status, err = build_specs(tmp_path, capsys, {name: OK_SPEC})
    except OSError:
        pytest.skip("this file system does not take that name")
    assert status == 0, err
    for path in (tmp_path / "out").iterdir():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)  # the module still parses
        assert text.splitlines()[1].startswith("# Do not edit")  # the header is still two comment lines
        assert not any(isinstance(node, ast.Attribute) and node.attr == "_exit" for node in ast.walk(tree))
    init = ast.parse((tmp_path / "out" / "__init__.py").read_text(encoding="utf-8"))
    assert f"specs/{name}" in ast.get_docstring(init)  # escaped, yet reads back as the real path


def test_a_long_source_line_is_shown_as_a_window_with_the_caret_in_place():
    from dsl.diagnostics import Diagnostic
    from dsl.model import Span

    line = ", ".join(f"v{i:03d}" for i in range(300))
    for column in (1, 50, 600, len(line) - 3):
        shown, caret = Diagnostic(Span("p", 1, column, 1, column + 4), "m").render(line).splitlines()[1:3]
        at = caret.index("^")
        assert shown[at : at + 4] == line[column - 1 : column + 3]
        assert len(shown) < 140


def test_a_spec_file_whose_suffix_is_not_lower_case_is_named(tmp_path, capsys):
    """b.NORM was skipped without a word (read only where the file system ignores case); a backup such as
    a.norm~ or a.norm.bak is not a spec and stays unread."""
    good = "op a {\n    norm = rms\n    targets = cuda\n}\n"
    status, err = build_specs(tmp_path, capsys, {"a.norm": good, "b.NORM": good.replace("op a", "op b")})
    assert status == 2 and "specs/b.NORM: error: b.NORM is not read: spec files end in .norm, in lower case" in err
    assert "rename it to b.norm" in err
    (tmp_path / "specs" / "b.NORM").unlink()
    status, err = build_specs(tmp_path, capsys, {"a.norm~": good, "a.norm.bak": good})
    assert status == 0, err


def test_a_crlf_spec_reads_as_its_lf_twin(tmp_path):
    """\\r\\n line ends (a Windows editor's) are line ends: a comment ends there and the next setting is
    set, as with \\n (a lone \\r is refused: the cases above)."""
    from dsl import pipeline

    text = "op a {\n    norm = rms  # a comment\n    eps = 1e-3\n}\n"
    for name, body in (("lf", text), ("crlf", text.replace("\n", "\r\n"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.norm").write_bytes(body.encode())
    lf, crlf = (pipeline.load_specs(tmp_path / name) for name in ("lf", "crlf"))
    assert crlf[0].eps == lf[0].eps == 1e-3


def test_torchs_own_operator_namespaces_are_all_refused():
    """Every namespace torch registers operators in, as a fresh process of this torch has them, is in
    the CLI's list of torch's namespaces (or starts with '_', which the CLI refuses as well)."""
    from dsl.cli import TORCH_NAMESPACES

    code = "import torch; print(*sorted({n.split('::')[0] for n in torch._C._dispatch_get_all_op_names()}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    missing = [ns for ns in done.stdout.split() if ns not in TORCH_NAMESPACES and not ns.startswith("_")]
    assert not missing, f"torch registers ops in {missing}: add them to dsl/cli.py's TORCH_NAMESPACES"
