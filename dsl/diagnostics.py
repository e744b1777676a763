"""Errors for people: ``path:line:col: error: message``, the line, a caret, a hint."""

from __future__ import annotations

from dataclasses import dataclass

from .model import Span

# At most this many errors are shown per file; a count line says how many more there are.
MAX_PER_FILE = 50
# A longer source line is shown as a window around the caret.
MAX_LINE = 120
# what a line's odd break characters are shown as (one column each, so the caret stays in place)
# Line breaks other than \n and \r\n, which spec files do not take (dsl/parse.py refuses them): each
# one's name in the error, and the symbol an excerpt shows in its place.
ODD_BREAKS = {
    "\r": ("a carriage return without a newline", "␍"),
    "\x0b": ("a vertical tab", "␋"),
    "\x0c": ("a form feed", "␌"),
    "\x85": ("a next-line character (U+0085)", "␤"),
    "\u2028": ("a line separator (U+2028)", "␤"),
    "\u2029": ("a paragraph separator (U+2029)", "␤"),
}
_SHOWN = str.maketrans({char: shown for char, (_, shown) in ODD_BREAKS.items()})


def source_lines(source: str) -> list[str]:
    """A file's lines as the parser counts them (at \n alone; \r\n's \r dropped), odd breaks made visible."""
    return [line.removesuffix("\r").translate(_SHOWN) for line in source.split("\n")]


@dataclass(frozen=True)
class Diagnostic:
    span: Span
    message: str
    hint: str = ""

    def render(self, source: str | list[str] | None) -> str:
        """The full text of one error; ``source`` is the file's text (or its lines), if known."""
        span = self.span
        if span.line == 0:  # about a whole file
            return f"{span.path}: error: {self.message}" + (f"\nhint: {self.hint}" if self.hint else "")
        lines = [f"{span.path}:{span.line}:{span.column}: error: {self.message}"]
        text_lines = source_lines(source) if isinstance(source, str) else source or []
        if 0 < span.line <= len(text_lines):
            line = text_lines[span.line - 1]
            start = span.column - 1
            width = span.end_column - span.column if span.end_line == span.line else len(line) - start
            width = max(min(width, MAX_LINE), 1)
            if len(line) > MAX_LINE:
                # A window around the caret, so that long lines do not repeat in full per error.
                left = max(start - MAX_LINE // 3, 0)
                shown = line[left : left + MAX_LINE]
                prefix = "..." if left else ""
                suffix = "..." if left + MAX_LINE < len(line) else ""
                line, start = prefix + shown + suffix, start - left + len(prefix)
                width = min(width, len(line) - start)
            # Keep the line's tabs in the caret's indent so the caret lines up under them.
            indent = "".join(c if c == "\t" else " " for c in line[:start]).ljust(start)
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
        """Every error, in file and source order; at most MAX_PER_FILE per file, then a count line."""
        parts, shown, lines = [], {}, {}
        for diagnostic in self.diagnostics:
            path = diagnostic.span.path
            shown[path] = shown.get(path, 0) + 1
            if shown[path] > MAX_PER_FILE:
                continue
            if path not in lines:
                source = self.sources.get(path)
                lines[path] = source_lines(source) if source is not None else None
            parts.append(diagnostic.render(lines[path]))
        for path, count in shown.items():
            if count > MAX_PER_FILE:
                more = count - MAX_PER_FILE
                parts.append(f"{path}: {more} more error{'s' if more != 1 else ''} not shown")
        count = len(self.diagnostics)
        parts.append(f"{count} error{'s' if count != 1 else ''}")
        return "\n".join(parts)


def allowed(values) -> str:
    """'allowed values are a, b, c' for a hint."""
    return "allowed values are " + ", ".join(values)
