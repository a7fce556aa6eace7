"""The gated delta rule, the sequential reference (``impl="reference"``, the oracle) and the decoding step.

Per head, with state S (K, V), log-space decay g_t (scalar per head) and one step t (as fla's
``fla/ops/gated_delta_rule/naive.py::naive_recurrent_gated_delta_rule``):
    S'  = exp(g_t) * S_{t-1}                          # (K, V)
    u_t = beta_t * (v_t - S'^T k_t)                   # (V,)
    S_t = S' + k_t u_t^T                              # (K, V)
    o_t = S_t^T (scale * q_t)                         # (V,)

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

import torch

from .._naive import acc_dtype, run_steps

__all__ = ["gated_delta_rule_step", "reference"]


def gated_delta_rule_step(q_t, k_t, v_t, g_t, beta_t, state, scale=None):
    """One recurrence step. q_t, k_t (B, H, K); v_t (B, H, V); g_t, beta_t (B, H); state (B, H, K, V).

    Returns (o_t (B, H, V) in q_t's dtype, new state (B, H, K, V) in the accumulation dtype). Does not mutate state.
    """
    acc = acc_dtype(q_t.dtype)
    scale = q_t.shape[-1] ** -0.5 if scale is None else scale
    q, k, v, g, beta = (t.to(acc) for t in (q_t, k_t, v_t, g_t, beta_t))
    S = state.to(acc) * g.exp()[..., None, None]                        # (B, H, K, V)
    u = beta[..., None] * (v - torch.einsum("bhk,bhkv->bhv", k, S))     # (B, H, V)
    S = S + k[..., :, None] * u[..., None, :]                           # (B, H, K, V)
    o = torch.einsum("bhk,bhkv->bhv", q * scale, S)                     # (B, H, V)
    return o.to(q_t.dtype), S


def reference(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """Sequential oracle: a Python loop over time with fp32 (or wider) state accumulation."""
    return run_steps(gated_delta_rule_step, (q, k, v, g, beta), v.shape[-1], scale, initial_state, output_final_state)
