"""The standalone MLP layer kind (``mlp``, Megatron-LM's pattern symbol ``-``), in JAX: a pre-norm feed-forward
layer with no sequence mixing, the FFN sub-block's math and parameters (``ffn.py``: ``up`` -> act -> ``down``, or
swiglu), or with `experts=E` the mixture of experts of ``moe.py``. Mirrors hybridc_torch's mlp layer (the same names
and shapes).

Dimension glossary:
    B batch, L sequence length, D model dim, F hidden size (int(mult * D)).
"""
from __future__ import annotations

from . import ffn, moe

__all__ = ["init", "init_state", "apply", "step"]

KERNEL = (None, "no recurrence")  # nothing to choose (describe --kernels)


def _impl(spec):
    """The dense FFN, or the mixture of experts when the spec has experts."""
    return moe if getattr(spec, "experts", 0) else ffn


def init(dim: int, spec, *, key) -> dict:
    return _impl(spec).init(dim, spec, key=key)


def init_state(dim: int, spec, batch_size: int, dtype=None, **kw) -> dict:
    return {}


def apply(params, x, spec, state=None, ctx=None):
    return _impl(spec).apply(params, x, spec, state, ctx)


def step(params, x_t, spec, state, ctx=None):
    return _impl(spec).step(params, x_t, spec, state, ctx)
