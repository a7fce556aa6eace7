"""Typed option values: convert a written `Value` to the type a spec field declares, with located errors.

Every kind's options (names, types, ranges, defaults) are read off the Pydantic spec classes in `hybridc.kinds`;
`type_text(field)` writes one for error messages.
"""
from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal, Union

from pydantic.fields import FieldInfo

from .errors import HybridcError, suggest
from .parse import Value

TRUE = {"true", "on", "yes"}
FALSE = {"false", "off", "no"}


def is_auto(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("auto"))


def _parts(annotation) -> tuple[list, bool]:
    """(non-None member types, whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = list(typing.get_args(annotation))
        return [a for a in args if a is not type(None)], type(None) in args
    return [annotation], False


def type_text(field: FieldInfo) -> str:
    members, nullable = _parts(field.annotation)
    out = []
    for m in members:
        if typing.get_origin(m) is Literal:
            out.append("|".join(map(str, typing.get_args(m))))
        else:
            out.append({int: "int", float: "number", bool: "true|false", str: "name"}.get(m, str(m)))
    if nullable:
        out.append("none")
    if is_auto(field):
        out.append("auto")
    text = "|".join(out)
    bounds = [f"{'>' if hasattr(m, 'gt') else '>='}{getattr(m, 'gt', getattr(m, 'ge', None))}"
              for m in field.metadata if hasattr(m, "ge") or hasattr(m, "gt")]
    bounds += [f"<={m.le}" for m in field.metadata if hasattr(m, "le")]
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def read_int(v: Value, what: str, lo: int = 1, hi: int | None = None, hint: str | None = None) -> int:
    """A written integer in a range (layer counts, shares, indices), with located errors."""
    n = _number(v, True, what)
    if n < lo:
        raise HybridcError(f"{what} must be at least {lo}, got {n}", v.pos)
    if hi is not None and n > hi:
        raise HybridcError(f"{what} must be at most {hi}, got {n}", v.pos, hint=hint)
    return n


def _number(v: Value, want_int: bool, what: str | None = None):
    """The one reader of a written number (every integer in the language comes through here)."""
    kind = "an integer" if want_int else "a number"
    bad = f"{what} must be {kind}, got '{v.raw}'" if what else f"expected {kind}, got '{v.raw}'"
    if v.kind != "number":
        raise HybridcError(bad, v.pos)
    x = float(v.raw)
    if not math.isfinite(x):
        raise HybridcError(f"'{v.raw}' is not a finite number", v.pos)
    if want_int:
        if x != int(x) or any(c in v.raw for c in ".eE"):
            raise HybridcError(bad, v.pos)
        return int(v.raw)
    return x


def convert(v: Value, field: FieldInfo, name: str) -> Any:
    """Written value -> Python value of the field's type (or 'auto'); range checks are left to Pydantic."""
    members, nullable = _parts(field.annotation)
    raw = v.raw.lower() if v.kind == "name" else v.raw
    if v.kind == "name" and raw == "auto" and is_auto(field):
        return "auto"
    if v.kind == "name" and raw == "none" and nullable:
        return None
    m = members[0]
    if typing.get_origin(m) is Literal:
        choices = [str(c) for c in typing.get_args(m)]
        if v.raw not in choices and bool in members and (raw in TRUE or raw in FALSE):
            return raw in TRUE  # a Literal-or-bool option (attn qk_norm: true = head, false = none)
        if v.raw not in choices:
            choices += ["true", "false"] if bool in members else []
            raise HybridcError(f"invalid value '{v.raw}' for {name}; expected one of {', '.join(choices)}", v.pos,
                               hint=suggest(v.raw, choices))
        return v.raw
    if m is bool:
        if raw in TRUE or raw == "1":
            return True
        if raw in FALSE or raw == "0":
            return False
        raise HybridcError(f"invalid value '{v.raw}' for {name}; expected true or false", v.pos)
    if m in (int, float):
        if v.kind == "name" and (nullable or is_auto(field)):
            extra = " or ".join(x for x, ok in (("none", nullable), ("auto", is_auto(field))) if ok)
            if raw not in ("none", "auto"):
                raise HybridcError(f"invalid value '{v.raw}' for {name}; expected a number or {extra}", v.pos,
                                   hint=suggest(raw, ["none", "auto"]))
            raise HybridcError(f"{name} cannot be {raw}", v.pos)
        return _number(v, m is int)
    if m is str:
        return v.raw
    raise HybridcError(f"cannot read a value for {name}", v.pos)  # pragma: no cover


def render(value: Any) -> str:
    """Python value -> canonical text."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)
    return str(value)
