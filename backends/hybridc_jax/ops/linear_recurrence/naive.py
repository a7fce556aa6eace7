"""The diagonal linear recurrence, the sequential reference (``impl="reference"``) and the decoding step, in JAX.

A ``lax.scan`` over time with an fp32 accumulator, outputs cast back to x's dtype, as recurrentgemma's ``rnn_scan``.
Measured, this is also the fastest XLA form (see ``chunk.py``): ``auto`` falls back to it on CPU without a C++
compiler. Mirrors hybridc_torch/ops/linear_recurrence/naive.py.

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

__all__ = ["reference", "linear_recurrence_step"]


def acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def linear_recurrence_step(h, a_t, x_t):
    """One step: returns the new state a_t * h + x_t (B, D) in the accumulation dtype."""
    acc = acc_dtype(x_t.dtype)
    return a_t.astype(acc) * h.astype(acc) + x_t.astype(acc)  # (B, D)


def reference(a, x, initial_state=None):
    """Sequential oracle. a, x (B, L, D); initial_state (B, D). Returns (h (B, L, D) in x.dtype, h_last (B, D) fp32)."""
    batch, _, channels = x.shape
    acc = acc_dtype(x.dtype)
    h = initial_state.astype(acc) if initial_state is not None else jnp.zeros((batch, channels), acc)  # (B, D)

    def cell(h, inputs):
        h = linear_recurrence_step(h, *inputs)  # (B, D)
        return h, h

    h, hs = lax.scan(cell, h, (jnp.moveaxis(a, 1, 0), jnp.moveaxis(x, 1, 0)))  # (B, D), (L, B, D)
    return jnp.moveaxis(hs, 0, 1).astype(x.dtype), h
