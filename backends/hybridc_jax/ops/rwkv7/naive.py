"""RWKV-7, the sequential reference (``impl="reference"``, the oracle) and the decoding step, in JAX.

A ``lax.scan`` over time with fp32 (or wider) state accumulation, as fla's
``fla/ops/generalized_delta_rule/dplr/naive.py`` (``dplr_recurrence``). Mirrors hybridc_torch/ops/rwkv7/naive.py.

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/receptance head dim, V value head dim.
"""
from __future__ import annotations

import jax.numpy as jnp

from .._naive import acc_dtype, run_steps

__all__ = ["reference", "rwkv7_step"]


def rwkv7_step(r_t, w_t, k_t, v_t, a_t, b_t, state, scale=1.0):
    """One recurrence step. r_t, w_t, k_t, a_t, b_t (B, H, K); v_t (B, H, V); state (B, H, K, V).

    scale None means K**-0.5. Returns (o_t (B, H, V) in r_t's dtype, new state in the accumulation dtype).
    """
    acc = acc_dtype(r_t.dtype)
    scale = r_t.shape[-1] ** -0.5 if scale is None else scale
    r, w, k, v, a, b = (t.astype(acc) for t in (r_t, w_t, k_t, v_t, a_t, b_t))
    S = state.astype(acc)                                               # (B, H, K, V)
    sa = jnp.einsum("bhk,bhkv->bhv", a, S)                              # (B, H, V)
    S = jnp.exp(w)[..., None] * S + b[..., :, None] * sa[..., None, :]  # (B, H, K, V)
    S = S + k[..., :, None] * v[..., None, :]                           # (B, H, K, V)
    o = jnp.einsum("bhk,bhkv->bhv", r * scale, S)                       # (B, H, V)
    return o.astype(r_t.dtype), S


def reference(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False):
    """Sequential oracle: ``lax.scan`` over time with fp32 (or wider) state accumulation."""
    return run_steps(rwkv7_step, (r, w, k, v, a, b), v.shape[-1], scale, initial_state, output_final_state)
