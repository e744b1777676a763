"""Errors for people: ``path:line:col: error: message``, the line, a caret, a hint."""

from __future__ import annotations

from dataclasses import dataclass

from .model import Span


@dataclass(frozen=True)
class Diagnostic:
    span: Span
    message: str
    hint: str = ""

    def render(self, source: str | None) -> str:
        """The full text of one error; ``source`` is the file's text, if known."""
        span = self.span
        lines = [f"{span.path}:{span.line}:{span.column}: error: {self.message}"]
        text_lines = source.splitlines() if source is not None else []
        if 0 < span.line <= len(text_lines):
            line = text_lines[span.line - 1]
            width = span.end_column - span.column if span.end_line == span.line else len(line) - span.column + 1
            # Keep the line's tabs in the caret's indent so the caret lines up under them.
            indent = "".join(c if c == "\t" else " " for c in line[: span.column - 1]).ljust(span.column - 1)
            lines.append(f"    {line}")
            lines.append(f"    {indent}^" + "~" * max(width - 1, 0))
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class SpecError(Exception):
    """One or more errors in spec files; ``render()`` gives their full text."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str]):
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.span.path, d.span.line, d.span.column))
        self.sources = sources
        super().__init__(self.render())

    def render(self) -> str:
        parts = [d.render(self.sources.get(d.span.path)) for d in self.diagnostics]
        count = len(self.diagnostics)
        parts.append(f"{count} error{'s' if count != 1 else ''}")
        return "\n".join(parts)


def allowed(values) -> str:
    """'allowed values are a, b, c' for a hint."""
    return "allowed values are " + ", ".join(values)
