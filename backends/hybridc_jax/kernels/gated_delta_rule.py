"""The gated delta rule recurrence (Gated DeltaNet), in JAX.

Paper: Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule" (2024, arXiv:2412.06464).
Reference implementation: flash-linear-attention, ``fla.ops.gated_delta_rule`` (``chunk_gated_delta_rule`` signature,
[B, T, H, K] layout; ``fla/ops/gated_delta_rule/naive.py::naive_recurrent_gated_delta_rule`` for the math). Mirrors
hybridc_torch/kernels/gated_delta_rule.py with ``lax.scan`` over time.

Per head, with state S (K, V), log-space decay g_t (scalar per head) and one step t:
    S'  = exp(g_t) * S_{t-1}                          # (K, V)
    u_t = beta_t * (v_t - S'^T k_t)                   # (V,)
    S_t = S' + k_t u_t^T                              # (K, V)
    o_t = S_t^T (scale * q_t)                         # (V,)
No internal L2 normalisation or gate activation: the caller passes normalised q/k, g in log space, beta in (0, 1).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ._dispatch import choose

__all__ = ["gated_delta_rule", "gated_delta_rule_step", "reference"]


def _acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: at least fp32 (fp64 inputs stay fp64)."""
    return jnp.promote_types(dtype, jnp.float32)


def gated_delta_rule_step(q_t, k_t, v_t, g_t, beta_t, state, scale=None):
    """One recurrence step. q_t, k_t (B, H, K); v_t (B, H, V); g_t, beta_t (B, H); state (B, H, K, V).

    Returns (o_t (B, H, V) in q_t's dtype, new state (B, H, K, V) in the accumulation dtype).
    """
    acc = _acc_dtype(q_t.dtype)
    scale = q_t.shape[-1] ** -0.5 if scale is None else scale
    q, k, v, g, beta = (t.astype(acc) for t in (q_t, k_t, v_t, g_t, beta_t))
    S = state.astype(acc) * jnp.exp(g)[..., None, None]                 # (B, H, K, V)
    u = beta[..., None] * (v - jnp.einsum("bhk,bhkv->bhv", k, S))       # (B, H, V)
    S = S + k[..., :, None] * u[..., None, :]                           # (B, H, K, V)
    o = jnp.einsum("bhk,bhkv->bhv", q * scale, S)                       # (B, H, V)
    return o.astype(q_t.dtype), S


def reference(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """Sequential oracle: ``lax.scan`` over time with fp32 (or wider) state accumulation."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    acc = _acc_dtype(q.dtype)
    if initial_state is None:
        S = jnp.zeros((B, H, K, V), acc)                                # (B, H, K, V)
    else:
        S = initial_state.astype(acc)                                   # (B, H, K, V)

    def cell(S, xs):
        o_t, S = gated_delta_rule_step(*xs, S, scale)                   # (B, H, V)
        return S, o_t

    S, o = lax.scan(cell, S, tuple(jnp.moveaxis(t, 1, 0) for t in (q, k, v, g, beta)))   # (T, B, H, V)
    return jnp.moveaxis(o, 0, 1).astype(q.dtype), (S if output_final_state else None)     # (B, T, H, V)


_IMPLS = {"reference": reference}


def _pick(impl: str):
    return choose("gated_delta_rule", _IMPLS, impl, "reference")


def gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, *, impl="auto"):
    """Gated delta rule over a sequence, as fla's ``chunk_gated_delta_rule`` (no in-kernel l2norm/gate/sigmoid).

    q, k (B, T, H, K); v (B, T, H, V); g (B, T, H) log decay; beta (B, T, H); scale defaults to K**-0.5;
    initial_state (B, H, K, V) or None. Returns (o (B, T, H, V), final_state (B, H, K, V) or None).
    """
    return _pick(impl)(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                       output_final_state=output_final_state)
