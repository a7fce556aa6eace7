"""Text -> statement nodes. Lark (LALR, positions kept) builds typed nodes; nothing is resolved here.

Every node keeps the `Pos` of the token it came from, so later stages can point at the exact spot.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Union

from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import HybridcError, Pos, suggest


# --- nodes ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Value:
    """A literal as written: `raw` text, and its position."""

    raw: str
    pos: Pos
    kind: str  # "name" | "number" | "string"


@dataclass(frozen=True)
class KV:
    key: str
    value: Value
    pos: Pos


@dataclass(frozen=True)
class Single:
    """One layer kind with its inline options: `attn(window=none)`."""

    kind: str
    options: tuple[KV, ...]
    pos: Pos


@dataclass(frozen=True)
class Pair:
    """`mamba|attn`: mixers side by side in one parallel block (a pair of one is a plain layer)."""

    members: tuple[Single, ...]
    pos: Pos


@dataclass(frozen=True)
class Item:
    """An item repeated `repeat` times; `atom` is a Pair or a tuple of Items (a group)."""

    atom: Union[Pair, tuple]
    repeat: int
    pos: Pos


@dataclass(frozen=True)
class LayoutOpt:
    key: str
    value: Value
    pos: Pos


@dataclass(frozen=True)
class LayersStmt:
    count: Value | None
    layout: str  # "none" | "ratio" | "every" | "items"
    numbers: tuple[Value, ...] = ()
    opts: tuple[LayoutOpt, ...] = ()
    items: tuple[Item, ...] = ()
    pos: Pos = Pos(1, 1)


@dataclass(frozen=True)
class PatternStmt:
    text: str
    pos: Pos
    text_pos: Pos


@dataclass(frozen=True)
class PresetStmt:
    name: str
    pos: Pos
    name_pos: Pos


@dataclass(frozen=True)
class ShareStmt:
    kinds: tuple[Value, ...]
    pos: Pos
    options: tuple = ()  # (KV, ...): blocks, input, lora, lora_on, into (hybridc/sharing.py)


@dataclass(frozen=True)
class AtStmt:
    ranges: tuple[tuple[Value, Value], ...]
    kind: Value
    options: tuple[KV, ...]
    pos: Pos


@dataclass(frozen=True)
class GenericStmt:
    """`NAME arg*`: model settings, mode, per-kind defaults. `args` holds Values and KVs in order."""

    name: str
    args: tuple = ()
    pos: Pos = Pos(1, 1)


Statement = Union[LayersStmt, PatternStmt, PresetStmt, ShareStmt, AtStmt, GenericStmt]


@dataclass
class Program:
    statements: list = field(default_factory=list)
    source: str = ""
    source_name: str = "<string>"


# --- parser -----------------------------------------------------------------------------------------------------------

class _Build(Transformer):
    """Lark tree -> nodes above; every position is tagged with `origin` (None: the user's text; a preset's name)."""

    def __init__(self, origin: str | None = None):
        super().__init__()
        self.origin = origin

    def _pos(self, tok: Token) -> Pos:
        return Pos(tok.line, tok.column, max(1, len(str(tok))), self.origin)

    def _value(self, tok: Token) -> Value:
        kind = {"NAME": "name", "NUMBER": "number", "STRING": "string"}.get(tok.type, "name")
        raw = str(tok)[1:-1] if kind == "string" else str(tok)
        return Value(raw, self._pos(tok), kind)

    def value(self, c):
        return self._value(c[0])

    def kv(self, c):
        return KV(str(c[0]), c[1], self._pos(c[0]))

    def options(self, c):
        return tuple(x for x in c if isinstance(x, KV))

    def single(self, c):
        return Single(str(c[0]), c[1] or (), self._pos(c[0]))

    def pair(self, c):
        return Pair(tuple(c), c[0].pos)

    def group(self, c):
        return tuple(c)

    def item(self, c):
        atom, rep = c
        pos = atom.pos if isinstance(atom, Pair) else atom[0].pos
        if rep is None:
            return Item(atom, 1, pos)
        return Item(atom, int(str(rep)[1:]), self._pos(rep))

    def items(self, c):
        return ("items", tuple(c))

    def layout_opt(self, c):
        return LayoutOpt(str(c[0]), self._value(c[1]), self._pos(c[0]))

    def ratio_layout(self, c):
        return ("ratio", (self._value(c[1]), self._value(c[2])), tuple(c[3:]), self._pos(c[0]))

    def every_layout(self, c):
        return ("every", (self._value(c[1]),), tuple(c[2:]), self._pos(c[0]))

    def layers_stmt(self, c):
        count, kw, layout = c
        count_v = self._value(count) if count is not None else None
        pos = count_v.pos if count_v else self._pos(kw)
        if layout is None:
            return LayersStmt(count_v, "none", pos=pos)
        if layout[0] == "items":
            return LayersStmt(count_v, "items", items=layout[1], pos=pos)
        return LayersStmt(count_v, layout[0], numbers=layout[1], opts=layout[2], pos=pos)

    def pattern_stmt(self, c):
        return PatternStmt(str(c[1])[1:-1], self._pos(c[0]), Pos(c[1].line, c[1].column + 1, max(1, len(c[1]) - 2), self.origin))

    def preset_stmt(self, c):
        return PresetStmt(str(c[1]), self._pos(c[0]), self._pos(c[1]))

    def share_stmt(self, c):
        return ShareStmt(tuple(self._value(t) for t in c[1:] if not isinstance(t, KV)), self._pos(c[0]),
                         tuple(t for t in c[1:] if isinstance(t, KV)))

    def index(self, c):
        lo, hi = c
        return (self._value(lo), self._value(hi) if hi is not None else self._value(lo))

    def at_stmt(self, c):
        ranges = tuple(x for x in c[1:] if isinstance(x, tuple))
        rest = [x for x in c[1:] if not isinstance(x, tuple)]
        return AtStmt(ranges, self._value(rest[0]), tuple(rest[1:]), self._pos(c[0]))

    def generic_stmt(self, c):
        return GenericStmt(str(c[0]), tuple(c[1:]), self._pos(c[0]))

    def start(self, c):
        return [x for x in c if x is not None and not isinstance(x, Token)]


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    try:  # installed: the grammar ships inside the package as hybridc.grammar
        text = resources.files("hybridc.grammar").joinpath("hybrid.lark").read_text()
    except ModuleNotFoundError:  # a source checkout on sys.path
        from pathlib import Path

        text = (Path(__file__).resolve().parent.parent / "grammar" / "hybrid.lark").read_text()
    return Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=True, cache=True)


_TOKEN_NAMES = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a quoted string", "_NL": "end of line", "SEMICOLON": "';'",
    "COLON": "':'", "LPAR": "'('", "RPAR": "')'", "EQUAL": "'='", "COMMA": "','", "VBAR": "'|'", "REPEAT": "a repeat like x3",
    "LAYERS": "'layers'", "RATIO": "'ratio'", "EVERY": "'every'", "LAYOUT_KEY": "backbone/placement/offset",
    "$END": "end of input", "__ANON_0": "'..'", "OPTIONS_OPEN": "'('",
}


def _expected(names) -> str:
    shown = sorted({_TOKEN_NAMES.get(n, n.lower()) for n in names})
    return ", ".join(shown[:6]) + (", ..." if len(shown) > 6 else "")


def _syntax_error(e: UnexpectedInput, text: str, source_name: str) -> HybridcError:
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else "?"
        return HybridcError(f"unexpected character {ch!r}", Pos(e.line, e.column), source=text, source_name=source_name)
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        lines = text.splitlines() or [""]
        pos = Pos(len(lines), len(lines[-1]) + 1)
        return HybridcError(f"unexpected end of input; expected {_expected(e.expected)}", pos, source=text,
                            source_name=source_name)
    tok = e.token
    what = "end of line" if tok.type == "_NL" else repr(str(tok))
    hint = None
    if tok.type == "NAME" and "EQUAL" in e.expected:
        hint = "options are written key=value"
    elif tok.type == "EQUAL" and re.search(r"[A-Za-z0-9_]\s+\(\s*[A-Za-z_]\w*\s*$",
                                           text.splitlines()[tok.line - 1][:tok.column - 1]):
        hint = "options attach to their kind with no space: kind(key=value)"
    elif tok.type == "NAME" and "NUMBER" in e.expected:
        hint = "a number is expected here"
    line = tok.line if tok.type != "_NL" else tok.line
    col = tok.column
    return HybridcError(f"unexpected {what}; expected {_expected(e.expected)}", Pos(line, col, max(1, len(str(tok).strip()) or 1)),
                        source=text, source_name=source_name, hint=hint)


def parse(text: str, source_name: str = "<string>", *, origin: str | None = None) -> Program:
    """Parse `.hyb` text into a Program of statement nodes; syntax errors become `HybridcError`.

    `origin` tags every position (used for preset texts, whose errors must point into the preset).
    """
    try:
        tree = _parser().parse(text + "\n")
    except UnexpectedInput as e:
        raise _syntax_error(e, text, source_name) from None
    return Program(_Build(origin).transform(tree), text, source_name)


__all__ = ["parse", "Program", "Value", "KV", "Single", "Pair", "Item", "LayersStmt", "PatternStmt", "PresetStmt",
           "ShareStmt", "AtStmt", "GenericStmt", "suggest"]
