"""Exact per-kind cost formulas (parameters, decode state, FLOPs): pure Python, no torch/jax.

One module per layer family; each mirrors the torch backend's parameterization written in docs/layers.md.
`formulas(kind)` returns `(params, state_numel, flops, resolve)`; `state_numel` and `flops` of attention take the
context length and meta-token count as extra arguments, the recurrent kinds' do not depend on them.
"""
from __future__ import annotations

import functools

from . import attn, delta, ssm


@functools.lru_cache(maxsize=None)
def _table() -> dict:
    table = {}
    for mod in (ssm, delta, attn):
        table.update(mod.FORMULAS)
    return table


def formulas(kind: str):
    return _table()[kind]


def params(spec, dim: int) -> int:
    return formulas(spec.kind)[0](spec, dim)


def state_numel(spec, dim: int, context: int = 0, meta: int = 0) -> int:
    fn = formulas(spec.kind)[1]
    return fn(spec, dim, context, meta) if spec.kind in attn.FORMULAS else fn(spec, dim)


def flops(spec, dim: int, context: int = 0, meta: int = 0) -> int:
    fn = formulas(spec.kind)[2]
    return fn(spec, dim, context, meta) if spec.kind in attn.FORMULAS else fn(spec, dim)


def resolve(kind: str, options: dict, dim: int) -> dict:
    """Fill `auto` options of `kind` from `dim`; raises ValueError for inconsistent options."""
    return formulas(kind)[3](options, dim)
