"""The dense masked form (``impl="reference"``, the oracle): all [L, L] scores, the causal (and window) mask, softmax.

The form the attention layer always ran (hybridc_jax/layers/attn.py ``_attend``, which still serves decoding and
meta tokens); Vaswani et al., "Attention Is All You Need" (2017), Eq. 1, with GQA's shared kv heads (Ainslie et al.,
2023) and Gemma-2's logit soft-cap.

Glossary: B batch, H query heads, G kv heads, L length (queries = keys), E head dim, Ev value head dim.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["reference", "causal_mask"]


def causal_mask(length: int, window: int | None):
    """(L, L) bool: key j visible to query i when j <= i (and i - j < window)."""
    i, j = jnp.arange(length)[:, None], jnp.arange(length)[None, :]
    ok = j <= i
    return ok if window is None else ok & (i - j < window)


def reference(q, k, v, scale: float, softcap: float | None = None, window: int | None = None):
    """q (B, H, L, E), k (B, G, L, E), v (B, G, L, Ev) -> (B, H, L, Ev)."""
    rep = q.shape[1] // k.shape[1]
    k, v = jnp.repeat(k, rep, axis=1), jnp.repeat(v, rep, axis=1)  # (B, H, L, E)
    s = jnp.einsum("bhle,bhse->bhls", q, k) * scale  # (B, H, L, L)
    if softcap is not None:
        s = softcap * jnp.tanh(s / softcap)
    s = jnp.where(causal_mask(q.shape[2], window), s, -jnp.inf)
    return jnp.einsum("bhls,bhse->bhle", jax.nn.softmax(s, axis=-1), v)
