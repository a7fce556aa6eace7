"""Diagonal linear recurrence h_t = a_t * h_{t-1} + x_t (the scan behind Griffin's RG-LRU, LRU, S5, ...), in JAX.

Paper: De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models"
(2024), Sec. 2.4. Reference implementation: google-deepmind/recurrentgemma ``rnn_scan``
(recurrentgemma/jax/scan.py, recurrentgemma/torch/layers.py): sequential scan with an fp32 accumulator, outputs
cast back to x's dtype. Mirrors hybridc_torch/kernels/linear_recurrence.py with ``lax.scan`` over time.

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ._dispatch import choose

__all__ = ["linear_recurrence", "linear_recurrence_step", "reference"]


def _acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def linear_recurrence_step(h, a_t, x_t):
    """One step: returns the new state a_t * h + x_t (B, D) in the accumulation dtype."""
    acc = _acc_dtype(x_t.dtype)
    return a_t.astype(acc) * h.astype(acc) + x_t.astype(acc)  # (B, D)


def reference(a, x, initial_state=None):
    """Sequential oracle. a, x (B, L, D); initial_state (B, D). Returns (h (B, L, D) in x.dtype, h_last (B, D) fp32)."""
    batch, _, channels = x.shape
    acc = _acc_dtype(x.dtype)
    h = initial_state.astype(acc) if initial_state is not None else jnp.zeros((batch, channels), acc)  # (B, D)

    def cell(h, inputs):
        h = linear_recurrence_step(h, *inputs)  # (B, D)
        return h, h

    h, hs = lax.scan(cell, h, (jnp.moveaxis(a, 1, 0), jnp.moveaxis(x, 1, 0)))  # (B, D), (L, B, D)
    return jnp.moveaxis(hs, 0, 1).astype(x.dtype), h


_IMPLS = {"reference": reference}


def _pick(impl: str):
    return choose("linear_recurrence", _IMPLS, impl, "reference")


def linear_recurrence(a, x, initial_state=None, *, impl="auto"):
    """h_t = a_t * h_{t-1} + x_t with h_{-1} = initial_state (zeros if None).

    a, x (B, L, D); initial_state (B, D). Returns (h (B, L, D) in x.dtype, h_last (B, D) fp32).
    """
    return _pick(impl)(a, x, initial_state)
