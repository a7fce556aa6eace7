"""The task contract: resolved options in, `(inputs, labels)` batches out, with clear errors for bad options.

A task is a generator of next-token batches: `batch(rng, size)` returns two int64 arrays of shape (B, L); `labels[b, t]`
is the target of the prediction made at position t (after reading `inputs[b, :t+1]`), -100 where nothing is scored.
Options are plain values (int, float, bool, str) checked here; numpy is imported by the generators only, so importing
`hybridc.tasks` (e.g. from the CLI) stays cheap.
"""
from __future__ import annotations

from typing import Any, ClassVar

from ..errors import HybridcError, suggest

IGNORE = -100  # label of an unscored position (the loss and the accuracy skip it)


class Task:
    """One synthetic (or file-backed) next-token task with resolved options.

    Subclasses set `name`, `defaults` (every option with its published default) and `source`, and implement
    `_setup()` (check the options, set `vocab` and `seq_len`) and `batch(rng, size)`.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    source: ClassVar[str] = ""

    vocab: int
    seq_len: int  # length L of the (B, L) arrays `batch` returns

    def __init__(self, **options: Any):
        self.options = dict(self.defaults) | options
        self._setup()

    def _setup(self) -> None:
        raise NotImplementedError

    def batch(self, rng, size: int):
        """`(inputs, labels)`: int64 arrays (size, seq_len); labels -100 where not scored."""
        raise NotImplementedError

    def fail(self, message: str, hint: str | None = None) -> None:
        raise HybridcError(f"task '{self.name}': {message}", hint=hint)

    def need(self, ok: bool, message: str, hint: str | None = None) -> None:
        if not ok:
            self.fail(message, hint)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


def resolve_options(name: str, defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The given options checked against `defaults` (names and types); None means 'use the default'."""
    out = {}
    for key, value in options.items():
        if value is None:
            continue
        if key not in defaults:
            valid = ", ".join(defaults) or "none"
            hint = f"valid options of '{name}': {valid}"
            close = suggest(key, defaults)
            raise HybridcError(f"task '{name}' has no option '{key}'", hint=f"{hint}; {close}" if close else hint)
        out[key] = _coerce(name, key, value, defaults[key])
    return out


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    """`value` as the type of `default` (int, float, bool or str); strings from a command line are parsed."""
    kind = type(default) if default is not None else str
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                return value.lower() in ("true", "1", "yes", "on")
            if isinstance(value, bool):
                return value
        elif kind is int:
            if isinstance(value, str):
                return int(value)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif kind is float:
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                return float(value)
        else:
            return str(value)
    except ValueError:
        pass
    word = {bool: "true|false", int: "an integer", float: "a number"}.get(kind, "a string")
    raise HybridcError(f"task '{name}': option '{key}' must be {word}, got {value!r}")


def uniform_ints(rng, low: int, high: int, shape):
    """Integers uniform in [low, high), int64."""
    import numpy as np

    return rng.integers(low, high, size=shape, dtype=np.int64)


def distinct_ints(rng, low: int, high: int, size: int, count: int):
    """(size, count) rows of `count` distinct integers from [low, high), each row a uniformly random ordered sample.

    Sparse draws (count^2 <= range) redraw the rows that repeat a value (iid rows conditioned on distinctness are
    uniform over ordered samples); dense ones sort random keys.
    """
    import numpy as np

    n = high - low
    if count * count > n:
        return (np.argsort(rng.random((size, n)), axis=1)[:, :count] + low).astype(np.int64)
    out = rng.integers(low, high, (size, count), dtype=np.int64)  # (B, count)
    while True:
        s = np.sort(out, axis=1)
        bad = np.flatnonzero((s[:, 1:] == s[:, :-1]).any(axis=1))
        if bad.size == 0:
            return out
        out[bad] = rng.integers(low, high, (bad.size, count), dtype=np.int64)
