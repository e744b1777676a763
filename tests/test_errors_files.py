"""Errors of a whole file, and of several files, reported at once in source order (the snapshots of
single mistakes: tests/test_errors.py and tests/test_errors_syntax.py)."""

# ruff: noqa: E501  (snapshots hold the exact lines, and some are longer than 120)

import pytest

from dsl.diagnostics import SpecError
from dsl.pipeline import load_specs

from .test_errors import errors_of


def test_all_errors_of_a_file_at_once_in_source_order():
    spec = """\
op b {
    norm  = rms
    bias  = shift
    store = mean
}

op a {
    norm    = rms
    casting = lama
    colour  = red
    eps     = 0
    casting = gemma
}
"""
    expected = """\
bad.norm:3:5: error: bias = shift needs norm = layer
        bias  = shift
        ^~~~~~~~~~~~~
hint: an RMS norm subtracts no mean; write `bias = none`
bad.norm:4:5: error: store = mean needs norm = layer
        store = mean
        ^~~~~~~~~~~~
hint: an RMS norm computes no mean; drop `mean` from store
bad.norm:9:15: error: unknown casting 'lama'
        casting = lama
                  ^~~~
hint: did you mean 'llama'? allowed values are llama, gemma, none
bad.norm:10:5: error: unknown setting 'colour'
        colour  = red
        ^~~~~~
hint: allowed settings are norm, residual, accumulate, casting, weight, bias, store, quantize, dtypes, targets, eps, backward
bad.norm:11:15: error: eps must be a positive number, got 0
        eps     = 0
                  ^
hint: write e.g. `eps = 1e-6`
bad.norm:12:5: error: 'casting' is set twice
        casting = gemma
        ^~~~~~~
hint: first set at line 9
6 errors
"""
    assert errors_of(spec) == expected


def load_errors(tmp_path, monkeypatch, files: dict[str, str]) -> str:
    """The errors of a folder of spec files, with paths relative to it."""
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        load_specs(tmp_path)
    return info.value.render() + "\n"


def test_op_defined_twice_across_files(tmp_path, monkeypatch):
    files = {
        "a.norm": "op add_norm {\n    norm = rms\n}\n",
        "b.norm": "# the same op again\nop add_norm {\n    norm = layer\n}\n",
    }
    expected = """\
b.norm:2:4: error: op 'add_norm' is defined twice
    op add_norm {
       ^~~~~~~~
hint: first defined at a.norm:1
1 error
"""
    assert load_errors(tmp_path, monkeypatch, files) == expected


def test_ops_whose_generated_modules_collide(tmp_path, monkeypatch):
    files = {"a.norm": "op norm { norm = rms }\nop norm_npu { norm = rms }\n"}
    expected = """\
a.norm:2:4: error: op 'norm_npu' would generate norm_npu.py, which op 'norm' generates too
    op norm_npu { norm = rms }
       ^~~~~~~~
hint: rename one of them (op 'norm' is at a.norm:1)
1 error
"""
    assert load_errors(tmp_path, monkeypatch, files) == expected


def test_errors_of_every_file_at_once(tmp_path, monkeypatch):
    files = {
        "b.norm": "op b {\n    norm = rms\n    bias = shift\n}\n",
        "a.norm": "op a {\n    norm rms\n}\n",
        "c.norm": "op c { norm = layer }\n",
    }
    expected = """\
a.norm:2:10: error: expected '=' after the setting name; found 'rms'
        norm rms
             ^~~
hint: settings are written `key = value`; separate several values with ','
b.norm:3:5: error: bias = shift needs norm = layer
        bias = shift
        ^~~~~~~~~~~~
hint: an RMS norm subtracts no mean; write `bias = none`
2 errors
"""
    assert load_errors(tmp_path, monkeypatch, files) == expected
