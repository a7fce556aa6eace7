"""Located errors: every user mistake becomes a `HybridcError` with file, line, column, caret and suggestion."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Pos:
    """A 1-based position in a source text (line, column) and the span length for the caret."""

    line: int
    column: int
    width: int = 1
    origin: str | None = None  # source name when the spot is not in the user's text (a preset)


class HybridcError(ValueError):
    """An invalid model or a request hybridc cannot honour.

    Carries `.line`, `.column` and `.source_name`; `str(err)` renders
    `model.hyb:3:12: error: ...`, the source line, a caret and a `did you mean` hint.
    """

    def __init__(self, message: str, pos: Pos | None = None, *, source: str | None = None,
                 source_name: str = "<string>", hint: str | None = None):
        self.message = message
        self.pos = pos
        self.line = pos.line if pos else None
        self.column = pos.column if pos else None
        self.source = source
        self.source_name = source_name
        self.hint = hint
        super().__init__(self.render())

    def located(self, source: str, source_name: str) -> "HybridcError":
        """The same error attached to a source text (keeps an existing attachment)."""
        if self.source is not None:
            return self
        if self.pos is not None and self.pos.origin is not None and self.pos.origin != source_name:
            from .presets import preset_text  # a spot inside a preset's text

            source, source_name = preset_text(self.pos.origin), self.pos.origin
        return type(self)(self.message, self.pos, source=source, source_name=source_name, hint=self.hint)

    def render(self) -> str:
        where = "hybridc" if (self.pos is None and self.source_name == "<string>") else self.source_name
        if self.pos is not None:
            where += f":{self.pos.line}:{self.pos.column}"
        out = [f"{where}: error: {self.message}"]
        if self.pos is not None and self.source is not None:
            lines = self.source.splitlines()
            if 1 <= self.pos.line <= len(lines):
                text = lines[self.pos.line - 1].replace("\t", " ")
                out.append(f"  {text}")
                out.append("  " + " " * (self.pos.column - 1) + "^" * max(1, min(self.pos.width, len(text) - self.pos.column + 1)))
        if self.hint:
            out.append(f"  {self.hint}")
        return "\n".join(out)


class UsageError(Exception):
    """A command-line mistake (a bad flag or value, a missing file): `hybridc: error: ...`, exit 2."""


class BackendError(HybridcError):
    """A backend is missing or cannot lower a construct of the model."""


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """`did you mean 'x'?` for the closest valid choice, or None."""
    import difflib  # only on the error path: keeps `hybridc describe` fast

    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


class ErrorList(HybridcError):
    """Several errors found in one check; renders them all."""

    def __init__(self, errors: list[HybridcError]):
        self.errors = errors
        first = errors[0]
        ValueError.__init__(self, "\n".join(e.render() for e in errors))
        self.message, self.pos, self.line, self.column = first.message, first.pos, first.line, first.column
        self.source, self.source_name, self.hint = first.source, first.source_name, first.hint

    def render(self) -> str:  # noqa: D102
        return "\n".join(e.render() for e in self.errors)
