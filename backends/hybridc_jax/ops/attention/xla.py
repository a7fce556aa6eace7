"""``jax.nn.dot_product_attention(implementation="xla")`` (``impl="xla"``): JAX's own attention.

On CPU its XLA form builds the whole [L, L] mask and scores as the reference does (its docstring: "implementations
like `xla` will generate a mask tensor", only cuDNN skips masked blocks); kept as a measured alternative. It has no
logit soft-cap: with one set, this falls back to the reference form.

Glossary: B batch, H query heads, G kv heads, L length, E head dim.
"""
from __future__ import annotations

import jax

from .naive import reference

__all__ = ["sdpa"]


def sdpa(q, k, v, scale: float, softcap: float | None = None, window: int | None = None):
    """q (B, H, L, E), k (B, G, L, E), v (B, G, L, E) -> (B, H, L, E); GQA passed through (H % G == 0)."""
    if softcap is not None or k.shape[-1] != v.shape[-1]:  # no soft-cap in jax.nn.dot_product_attention
        return reference(q, k, v, scale, softcap, window)
    t = lambda a: a.transpose(0, 2, 1, 3)  # (B, H, L, E) <-> (B, L, H, E), the layout it takes
    y = jax.nn.dot_product_attention(t(q), t(k), t(v), scale=scale, is_causal=True, implementation="xla",
                                     local_window_size=None if window is None else (window - 1, 0))
    return t(y)
