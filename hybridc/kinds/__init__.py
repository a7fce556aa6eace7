"""The layer kinds: the one list of them, each imported on first use.

Everything the compiler knows about a kind lives in its module `hybridc/kinds/<kind>.py` (one `KindSpec` subclass:
options and defaults, `auto` resolution, cost formulas, role, Megatron letter, the options describe shows). The
IR's union of mixers, `hybridc schema`, the resolver, describe and the pattern letters all read this registry.
Adding a kind: write its module and add its name to `NAMES`; then a torch layer `hybridc_torch/layers/<kind>.py`,
a JAX layer `hybridc_jax/layers/<kind>.py`, a row in docs/layers.md and a program in tests/programs.py (the
registry test names whichever is missing).
"""
from __future__ import annotations

import functools
import importlib

from ._base import KindSpec

NAMES: tuple[str, ...] = ("mamba", "mamba2", "gru", "rwkv", "delta_net", "gated_delta_net", "griffin_lru",
                          "short_conv", "attn", "mlp", "moe")
# Megatron-LM's hybrid-pattern letters (`pattern "M*M-"`) -> kind. Written here, not read from the kind modules, so
# that a pattern imports only the kinds it uses (describe's start-up).
PATTERN_LETTERS: dict[str, str] = {"M": "mamba2", "G": "gated_delta_net", "*": "attn", "-": "mlp", "E": "moe"}

__all__ = ["NAMES", "KindSpec", "spec_class", "all_specs", "kinds_with_role", "pattern_symbols", "linked_values",
           "PATTERN_LETTERS"]


@functools.lru_cache(maxsize=None)
def spec_class(kind: str) -> type[KindSpec]:
    """The spec class of `kind` (imports its module); KeyError for an unknown kind."""
    if kind not in NAMES:
        raise KeyError(kind)
    module = importlib.import_module(f"{__name__}.{kind}")
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, KindSpec) and v.__module__ == module.__name__]
    if len(found) != 1 or found[0].model_fields["kind"].default != kind:
        raise TypeError(f"{module.__name__} must define exactly one KindSpec subclass with kind={kind!r}")
    return found[0]


def all_specs() -> dict[str, type[KindSpec]]:
    """Every kind's spec class, in registry order (imports every kind module)."""
    return {k: spec_class(k) for k in NAMES}


def kinds_with_role(role: str) -> tuple[str, ...]:
    """The kinds whose ROLE is `role` ("backbone", "attention", "mlp")."""
    return tuple(k for k, c in all_specs().items() if c.ROLE == role)


def pattern_symbols() -> dict[str, str]:
    """Megatron-LM pattern symbol -> kind, for the kinds that have one."""
    return dict(PATTERN_LETTERS)


def linked_values(layers) -> dict:
    """(layer, mixer) -> the MODEL_AUTO values `auto` gives there, each kind's `link` over its mixers in layer order
    (e.g. RWKV-7's value residual: false for the model's first rwkv mixer, true after it)."""
    where: dict = {}
    for i, l in enumerate(layers):
        for j, m in enumerate(l.mixers):
            if m.MODEL_AUTO:
                where.setdefault(m.kind, []).append((i, j))
    out = {}
    for kind, spots in where.items():
        out.update(zip(spots, spec_class(kind).link([layers[i].mixers[j] for i, j in spots])))
    return out
