"""The delta rule, the sequential reference (``impl="reference"``, the oracle) and the decoding step, in JAX.

A ``lax.scan`` over time with fp32 (or wider) state accumulation, as fla's
``fla/ops/delta_rule/naive.py::delta_rule_recurrence``. Mirrors hybridc_torch/ops/delta_rule/naive.py.

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

import jax.numpy as jnp

from .._naive import acc_dtype, run_steps

__all__ = ["reference", "delta_rule_step"]


def delta_rule_step(q_t, k_t, v_t, beta_t, state, scale=None):
    """One recurrence step. q_t, k_t (B, H, K); v_t (B, H, V); beta_t (B, H); state (B, H, K, V).

    Returns (o_t (B, H, V) in q_t's dtype, new state (B, H, K, V) in the accumulation dtype).
    """
    acc = acc_dtype(q_t.dtype)
    scale = q_t.shape[-1] ** -0.5 if scale is None else scale
    q, k, v, beta = (t.astype(acc) for t in (q_t, k_t, v_t, beta_t))
    S = state.astype(acc)                                               # (B, H, K, V)
    u = beta[..., None] * (v - jnp.einsum("bhk,bhkv->bhv", k, S))       # (B, H, V)
    S = S + k[..., :, None] * u[..., None, :]                           # (B, H, K, V)
    o = jnp.einsum("bhk,bhkv->bhv", q * scale, S)                       # (B, H, V)
    return o.astype(q_t.dtype), S


def reference(q, k, v, beta, scale=None, initial_state=None, output_final_state=False):
    """Sequential oracle: ``lax.scan`` over time with fp32 (or wider) state accumulation."""
    return run_steps(delta_rule_step, (q, k, v, beta), v.shape[-1], scale, initial_state, output_final_state)
