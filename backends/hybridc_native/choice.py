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


def plan_rows(model, devices, kernel_of) -> list[dict]:
    """One row per mixer kind: its layers, the recurrence and the implementation per device (`describe --kernels`).

    kernel_of(kind) -> an `Op` (a recurrence with a choice of implementations), or (name, why) for a kind that
    runs one fixed thing (attention's SDPA, torch's fused GRU; name None for no recurrence)."""
    layers: dict[str, list[int]] = {}
    for i, layer in enumerate(model.layers):
        for m in layer.mixers:
            layers.setdefault(m.kind, []).append(i)
    rows = []
    for kind, idx in layers.items():
        k = kernel_of(kind)
        if isinstance(k, Op):
            op, picks = k.name, {d: k.choice(d) for d in devices}
        else:
            op, picks = "-", {d: (k[0] or "-", k[1]) for d in devices}
        rows.append({"kind": kind, "layers": idx, "op": op if isinstance(k, Op) else (k[0] or "-"),
                     "impl": {d: p[0] for d, p in picks.items()}, "why": {d: p[1] for d, p in picks.items()}})
    return rows


class Op:
    """One recurrence's implementations, declared once (in its op folder's ``__init__.py``) and read by both the
    dispatcher (`pick`) and ``describe --kernels`` (`choice`).

    impls: implementation name -> ``"module:function"`` relative to the op package (``"naive:reference"``,
    ``"chunk:chunk_ssd"``), imported on first use so that, e.g., torch without triton still imports the op.
    auto: device kind (``"cpu"``, ``"cuda"``, ``"gpu"``, ...) -> implementation name; it may probe what is installed
    or buildable (and fall back), but never imports a fast kernel's module.
    """

    def __init__(self, name: str, package: str, impls: dict[str, str], auto):
        self.name, self.package, self.impls, self._auto = name, package, dict(impls), auto
        self._loaded: dict = {}

    def __repr__(self) -> str:
        return f"Op({self.name!r}, impls={list(self.impls)})"

    def get(self, name: str):
        """The implementation called `name` (imported on first use)."""
        if name not in self._loaded:
            import importlib

            module, _, attr = self.impls[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(f"{self.package}.{module}"), attr)
        return self._loaded[name]

    def auto(self, device: str) -> str:
        return self._auto(device)

    def resolve(self, impl: str = "auto", device: str = "cpu") -> tuple[str, str]:
        """(implementation name, where the choice came from: "impl=", ENV or "auto")."""
        return resolve(self.name, self.impls, impl, self._auto(device) if impl == "auto" else impl)

    def pick(self, impl: str = "auto", device: str = "cpu"):
        """The callable `impl` names on `device` (precedence: impl=, then HYBRIDC_KERNEL, then auto)."""
        return self.get(self.resolve(impl, device)[0])

    def choice(self, device: str) -> tuple[str, str]:
        """(implementation name, why) that ``impl="auto"`` picks on `device`: a row of ``describe --kernels``."""
        name, source = self.resolve("auto", device)
        return name, ("forced by HYBRIDC_KERNEL" if source != "auto" else f"auto on {device}")
