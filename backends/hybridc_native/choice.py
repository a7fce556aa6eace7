"""How a kernel entry point turns `impl=` into an implementation: the rules both backends share (stdlib only).

Precedence: an explicit ``impl=`` argument, then the environment variable ``HYBRIDC_KERNEL``, then the entry point's
``auto`` choice for the device. ``HYBRIDC_KERNEL`` is a comma-separated list: a bare name (``reference``, ``chunk``,
``cpp``, ``triton``, ``pallas``) forces that implementation for every recurrence that has one (the others keep
``auto``); ``op=name`` (``selective_scan=reference``) forces it for one recurrence, and it must exist there.
"""
from __future__ import annotations

import os

ENV = "HYBRIDC_KERNEL"
KNOWN = ("auto", "reference", "chunk", "scan_chunk", "cpp", "triton", "pallas")


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


def plan_rows(model, devices, ops: dict, fixed: dict, choice) -> list[dict]:
    """One row per mixer kind: its layers, the recurrence and the implementation per device (`describe --kernels`).

    ops: kind -> recurrence name; fixed: kind -> (name, why) for kinds without a choice; choice(op, device) ->
    (name, why), the backend's own `auto` resolution."""
    layers: dict[str, list[int]] = {}
    for i, layer in enumerate(model.layers):
        for m in layer.mixers:
            layers.setdefault(m.kind, []).append(i)
    rows = []
    for kind, idx in layers.items():
        if kind in ops:
            op, picks = ops[kind], {d: choice(ops[kind], d) for d in devices}
        else:
            op, why = fixed[kind]
            picks = {d: (op or "-", why) for d in devices}
        rows.append({"kind": kind, "layers": idx, "op": ops.get(kind, op or "-"),
                     "impl": {d: p[0] for d, p in picks.items()}, "why": {d: p[1] for d, p in picks.items()}})
    return rows
