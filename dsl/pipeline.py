"""The stages strung together: spec files -> checked NormSpecs -> generated files."""

from __future__ import annotations

import ast
import dataclasses
import io
import os
import tokenize
from pathlib import Path

from . import names
from .check import check, check_names
from .diagnostics import Diagnostic, SpecError
from .model import NormSpec, Span, Target
from .op_view import op_plan
from .parse import parse
from .render import render_all, render_op, render_reference
from .resolve import resolve_partial
from .targets import cuda, npu_tuning

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "dsl" / "specs"
GENERATED = ROOT / "generated"

_BOM = b"\xef\xbb\xbf"


def display_path(path: Path) -> str:
    """Repo-relative where possible, else relative to the working directory (never absolute)."""
    try:
        path = path.resolve()
    except (OSError, RuntimeError):  # a symbolic link loop: name the link itself
        path = Path(os.path.abspath(path))
    for base in (ROOT, Path.cwd()):
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            continue
    return Path(os.path.relpath(path)).as_posix()


def _source_name(spec_dir: Path, file: Path) -> str:
    """How the generated files' headers name a spec file: repo-relative in this checkout, else its
    folder's name and its own (messages name it from the working directory; a header that did
    would change with the directory a build runs in)."""
    try:
        return spec_dir.resolve().joinpath(file.name).relative_to(ROOT).as_posix()
    except (ValueError, OSError, RuntimeError):
        return f"{spec_dir.resolve().name}/{file.name}"


def _file_error(path: str, message: str, hint: str = "") -> Diagnostic:
    """An error about a whole file (line 0: rendered as ``path: error: message``)."""
    return Diagnostic(Span(path, 0, 0, 0, 0), message, hint)


def _load(text: str, path: str) -> tuple[list[tuple[NormSpec, frozenset[str]]], list[Diagnostic]]:
    """Every op of one file's text that names its norm (with the keys that failed), and every error."""
    try:
        syntax = parse(text, path)
    except SpecError as error:
        return [], error.diagnostics
    if not syntax.ops:
        hint = "a spec file holds one or more ops, each written `op NAME { key = value ... }`"
        return [], [Diagnostic(Span(path, 1, 1, 1, 2), "the file defines no ops", hint)]
    partial, errors = resolve_partial(syntax)
    for spec, failed in partial:
        errors += check(spec, failed)
    return partial, errors


def load_text(text: str, path: str) -> list[NormSpec]:
    """Parse, resolve and check one file's text; SpecError carries every error."""
    partial, errors = _load(text, path)
    if errors:
        raise SpecError(errors, {path: text})
    return [spec for spec, _ in partial]


def _decode(data: bytes, path: str) -> tuple[str, list[Diagnostic]]:
    """A spec file's text, and an error when it is not plain UTF-8."""
    if data.startswith(_BOM):
        hint = "save the file as UTF-8 without a byte order mark"
        return data[len(_BOM) :].decode("utf-8", "replace"), [
            Diagnostic(Span(path, 1, 1, 1, 2), "the file starts with a byte order mark", hint)
        ]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        line = data.count(b"\n", 0, error.start) + 1
        column = len(data[line_start : error.start].decode("utf-8", "replace")) + 1
        message = f"the file is not valid UTF-8 (byte 0x{data[error.start]:02x})"
        span = Span(path, line, column, line, column + 1)
        return data.decode("utf-8", "replace"), [Diagnostic(span, message, "spec files are UTF-8 text")]


def _load_all(spec_dir: Path) -> tuple[list[NormSpec], list[Diagnostic], dict[str, str]]:
    """(specs without errors, every error of every file, {path: text})."""
    if not spec_dir.exists():
        raise FileNotFoundError(f"{display_path(spec_dir)} does not exist")
    if not spec_dir.is_dir():
        raise NotADirectoryError(f"{display_path(spec_dir)} is a file, not a folder of *.norm spec files")
    # (hidden files: editors' lock files and backups, macOS's ._ files, are not specs)
    files = sorted(f for f in spec_dir.glob("*.norm") if not f.name.startswith("."))
    # b.NORM would be read on a case-insensitive file system and skipped without a word on the others
    cased = sorted(
        f for f in spec_dir.iterdir() if f.suffix != ".norm" and f.suffix.lower() == ".norm" and f.name[0] != "."
    )
    if not files and not cased:
        raise FileNotFoundError(f"no *.norm spec files in {display_path(spec_dir)}")
    partial, diagnostics, sources = [], [], {}
    for file in cased:
        path = Path(display_path(spec_dir), file.name).as_posix()
        message = f"{file.name} is not read: spec files end in .norm, in lower case"
        diagnostics.append(_file_error(path, message, f"rename it to {file.stem}.norm"))
    for file in files:
        raw_name = os.fsencode(file.name)
        try:
            raw_name.decode("utf-8")
        except UnicodeDecodeError:
            shown = f"{display_path(spec_dir)}/{raw_name.decode('utf-8', 'backslashreplace')}"
            diagnostics.append(_file_error(shown, "the file name is not valid UTF-8", "rename the file"))
            continue
        path = Path(display_path(spec_dir), file.name).as_posix()  # (the file's own name, a link's too)
        if file.is_dir():
            hint = f"rename it or move it out of {display_path(spec_dir)}"
            diagnostics.append(_file_error(path, f"{file.name} is a folder, not a spec file", hint))
            continue
        if file.exists() and not file.is_file():
            diagnostics.append(_file_error(path, f"{file.name} is not a regular file", "spec files are text files"))
            continue
        try:
            data = file.read_bytes()
        except OSError as error:
            diagnostics.append(_file_error(path, f"cannot read the file: {error.strerror or error}"))
            continue
        text, errors = _decode(data, path)
        sources[path] = text
        if errors:
            diagnostics += errors
            continue
        file_partial, errors = _load(text, path)
        if (source := _source_name(spec_dir, file)) != path:
            file_partial = [(dataclasses.replace(spec, path=source), failed) for spec, failed in file_partial]
        partial += file_partial
        diagnostics += errors
    specs = [spec for spec, _ in partial]
    unknown = frozenset(id(spec) for spec, failed in partial if "targets" in failed)
    diagnostics += check_names(specs, unknown)
    return [spec for spec, failed in partial if not failed], diagnostics, sources


def load_specs(spec_dir: Path) -> list[NormSpec]:
    """Every op of every ``*.norm`` file in ``spec_dir``, with all errors of all files at once."""
    specs, diagnostics, sources = _load_all(spec_dir)
    if diagnostics:
        raise SpecError(diagnostics, sources)
    return specs


_STAND_IN = "zz_normgen_op_zz"


def _names_used(text: str) -> set[str]:
    """Every identifier in a piece of Python source."""
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return {token.string for token in tokens if token.type == tokenize.NAME}


def _module_names(text: str) -> set[str]:
    """The names a piece of Python source binds at module level (imports, assignments, defs)."""
    bound = set()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                bound.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return bound


def check_generated_names(specs: list[NormSpec], namespace: str) -> list[Diagnostic]:
    """An op name must not be a name the op's generated code uses for something else (a
    parameter, a local, an import), nor its module class a name the op's module binds (``OP``):
    the op's modules are rendered with a stand-in name and the real names must not occur in them."""
    errors = []
    for spec in specs:
        stand_in = op_plan(dataclasses.replace(spec, name=_STAND_IN), namespace)
        op_text = render_op(stand_in)
        used = _names_used(op_text) | _names_used(render_reference(stand_in))
        if spec.name in used:
            errors.append(
                Diagnostic(
                    spec.span("op"),
                    f"op name '{spec.name}' is reserved: the generated code uses '{spec.name}' as another name",
                    f"choose another name, e.g. '{spec.name}_norm'",
                )
            )
        elif (class_name := names.module_class(spec)) in _module_names(op_text):
            errors.append(
                Diagnostic(
                    spec.span("op"),
                    f"op '{spec.name}' would generate the module class {class_name}, a name its module uses "
                    "for something else",
                    f"choose another name, e.g. '{spec.name}_norm'",
                )
            )
    return errors


def read_tuning() -> dict[Target, dict | None]:
    """Each target's tuning data, read from its file (the planner itself reads no files)."""
    return {Target.CUDA: cuda.load_tuning(), Target.NPU: npu_tuning.load_tuning()}


def load_buildable(spec_dir: Path, namespace: str) -> list[NormSpec]:
    """``load_specs`` and the names the generated code must leave free: the specs a build renders."""
    specs, diagnostics, sources = _load_all(spec_dir)
    diagnostics += check_generated_names(specs, namespace)
    if diagnostics:
        raise SpecError(diagnostics, sources)
    return specs


def generate(spec_dir: Path, namespace: str, tuning: dict[Target, dict | None] | None = None) -> dict[str, str]:
    specs = load_buildable(spec_dir, namespace)
    return render_all(specs, namespace, read_tuning() if tuning is None else tuning)
