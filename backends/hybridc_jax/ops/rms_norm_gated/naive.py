"""The gated group RMSNorm, the reference (``impl="reference"``): the jnp expression in fp32 (fp64 for fp64 inputs).

Glossary of dimension letters:
    E: channels    G: groups (E / group_size)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["reference"]


def reference(y, z, weight, group_size: int, eps: float, norm_before_gate: bool = False):
    """y, z (..., E); weight (E,) or None (out = y * silu(z)). Returns (..., E) in y.dtype."""
    acc = jnp.float64 if y.dtype == jnp.float64 else jnp.float32
    gate = jax.nn.silu(z.astype(acc))  # (..., E)
    if weight is None:
        return (y.astype(acc) * gate).astype(y.dtype)
    h = y.astype(acc) if norm_before_gate else y.astype(acc) * gate  # (..., E)
    hg = h.reshape(h.shape[:-1] + (h.shape[-1] // group_size, group_size))  # (..., G, E/G)
    hg = hg * jax.lax.rsqrt(jnp.mean(jnp.square(hg), axis=-1, keepdims=True) + eps)
    out = weight * hg.reshape(h.shape)  # (..., E)
    return (out * gate if norm_before_gate else out).astype(y.dtype)
