"""Backend discovery: a dict of built-in `name -> "module:attr"` plus the entry-point group `hybridc.backends`.

Nothing is imported until a backend is used; a missing framework becomes "pip install hybridc[torch]".
A backend object provides `build(model, **options)`, `emit(model) -> str` (the compile emitter) and
`check(model) -> dict` (one forward on a random batch) and `kernels(model) -> list[dict]` (which kernel each
mixer kind runs on each device).
"""
from __future__ import annotations

import importlib
import importlib.util

from .errors import BackendError, suggest

BUILTIN = {"torch": "hybridc_torch:backend", "jax": "hybridc_jax:backend"}
FRAMEWORK = {"torch": "torch", "jax": "jax"}


def _registry() -> dict:
    from importlib.metadata import entry_points  # slow to import: only when a backend is looked up

    table = dict(BUILTIN)
    for ep in entry_points(group="hybridc.backends"):
        table.setdefault(ep.name, ep.value)
    return table


def backends() -> dict[str, bool]:
    """Known backends and whether each can be used here (its package and framework are installed)."""
    out = {}
    for name, target in _registry().items():
        mod = target.split(":")[0]
        fw = FRAMEWORK.get(name)
        out[name] = importlib.util.find_spec(mod) is not None and (fw is None or importlib.util.find_spec(fw) is not None)
    return out


def get(name: str):
    """The backend object registered as `name`."""
    table = _registry()
    if name not in table:
        raise BackendError(f"unknown backend '{name}'", hint=suggest(name, table) or f"backends: {', '.join(table)}")
    fw = FRAMEWORK.get(name)
    if fw is not None and importlib.util.find_spec(fw) is None:
        raise BackendError(f"the {name} backend needs {fw}, which is not installed",
                           hint=f"pip install 'hybridc[{name}]'")
    mod, _, attr = table[name].partition(":")
    try:
        obj = importlib.import_module(mod)
    except ImportError as e:
        raise BackendError(f"the {name} backend could not be imported: {e}", hint=f"pip install 'hybridc[{name}]'") from None
    return getattr(obj, attr) if attr else obj
