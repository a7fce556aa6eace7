"""The one place a kernel entry point turns `impl=` into an implementation."""
from __future__ import annotations


def choose(op: str, impls: dict, impl: str, auto: str):
    """impls[auto] for impl="auto", impls[impl] otherwise; an unknown name is a ValueError listing the choices."""
    name = auto if impl == "auto" else impl
    if name not in impls:
        valid = ", ".join(repr(n) for n in ["auto", *impls])
        raise ValueError(f"unknown {op} impl {impl!r}; valid choices: {valid}")
    return impls[name]
