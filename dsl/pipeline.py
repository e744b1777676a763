"""The stages strung together: spec files -> checked NormSpecs -> generated files."""

from __future__ import annotations

import os
from pathlib import Path

from .check import check, check_names
from .diagnostics import SpecError
from .model import NormSpec, Target
from .parse import parse
from .render import render_all
from .resolve import resolve
from .targets import cuda

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "dsl" / "specs"
GENERATED = ROOT / "generated"


def display_path(path: Path) -> str:
    """Repo-relative where possible, else relative to the working directory (never absolute)."""
    path = path.resolve()
    for base in (ROOT, Path.cwd()):
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            continue
    return Path(os.path.relpath(path)).as_posix()


def load_text(text: str, path: str) -> list[NormSpec]:
    """Parse, resolve and check one file's text; SpecError carries every error."""
    syntax = parse(text, path)
    specs, errors = resolve(syntax)
    for spec in specs:
        errors += check(spec)
    if errors:
        raise SpecError(errors, {path: text})
    return specs


def load_specs(spec_dir: Path) -> list[NormSpec]:
    """Every op of every ``*.norm`` file in ``spec_dir``, with all errors of all files at once."""
    files = sorted(spec_dir.glob("*.norm"))
    if not files:
        raise FileNotFoundError(f"no *.norm spec files in {display_path(spec_dir)}")
    specs, diagnostics, sources = [], [], {}
    for file in files:
        path = display_path(file)
        text = file.read_text(encoding="utf-8")
        sources[path] = text
        try:
            specs += load_text(text, path)
        except SpecError as error:
            diagnostics += error.diagnostics
    diagnostics += check_names(specs)
    if diagnostics:
        raise SpecError(diagnostics, sources)
    return specs


def read_tuning() -> dict[Target, dict | None]:
    """Each target's tuning data, read from its file (the planner itself reads no files)."""
    return {Target.CUDA: cuda.load_tuning(), Target.NPU: None}


def generate(spec_dir: Path, namespace: str, tuning: dict[Target, dict | None] | None = None) -> dict[str, str]:
    return render_all(load_specs(spec_dir), namespace, read_tuning() if tuning is None else tuning)
