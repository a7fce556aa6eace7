"""The one place a kernel entry point turns `impl=` into an implementation.

Precedence: an explicit ``impl=`` argument, then the environment variable ``HYBRIDC_KERNEL``, then the entry point's
``auto`` choice for the device. ``HYBRIDC_KERNEL`` is a comma-separated list: a bare name (``reference``, ``chunk``,
``cpp``, ``triton``, ``pallas``) forces that implementation for every recurrence that has one (the others keep
``auto``); ``op=name`` (``selective_scan=reference``) forces it for one recurrence, and it must exist there.
"""
from __future__ import annotations

import functools
import importlib.util
import os

ENV = "HYBRIDC_KERNEL"
KNOWN = ("auto", "reference", "chunk", "cpp", "triton", "pallas")


def forced(op: str) -> tuple[str | None, str | None]:
    """(this op's `op=name` entry, the bare name) from HYBRIDC_KERNEL; None where absent."""
    per, bare = {}, None
    for part in os.environ.get(ENV, "").split(","):
        key, eq, val = part.strip().partition("=")
        if eq:
            per[key.strip()] = val.strip()
        elif key:
            bare = key
    if bare is not None and bare not in KNOWN:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: unknown kernel {bare!r}; valid: {', '.join(KNOWN)}")
    return per.get(op), bare


def resolve(op: str, impls: dict, impl: str, auto: str) -> tuple[str, str]:
    """(implementation name, where the choice came from: "impl=", ENV or "auto")."""
    name, source = impl, "impl="
    if impl == "auto":
        strict, bare = forced(op)
        if strict is not None and strict != "auto":
            name, source = strict, ENV
        elif bare is not None and bare in impls:
            name, source = bare, ENV
        else:
            name, source = auto, "auto"
    if name not in impls:
        valid = ", ".join(repr(n) for n in ["auto", *impls])
        raise ValueError(f"unknown {op} impl {name!r} (from {source}); valid choices: {valid}")
    return name, source


def choose(op: str, impls: dict, impl: str, auto: str):
    """The implementation `resolve` names."""
    return impls[resolve(op, impls, impl, auto)[0]]


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether triton is installed (cached): ``auto`` picks the Triton kernels for CUDA tensors only then."""
    return importlib.util.find_spec("triton") is not None
