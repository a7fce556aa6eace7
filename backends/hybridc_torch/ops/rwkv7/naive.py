"""RWKV-7's generalized delta rule, the sequential reference (``impl="reference"``, the oracle) and the decoding step.

Per head, with state S (K, V), log decay w_t (K,) and one step t (a^T S uses the state *before* the decay; as fla's
``fla/ops/generalized_delta_rule/dplr/naive.py::dplr_recurrence``):
    S_t = exp(w_t)[:, None] * S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T      # (K, V)
    o_t = S_t^T (scale * r_t)                                                 # (V,)

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/receptance head dim, V value head dim.
"""
from __future__ import annotations

import torch

from .._naive import acc_dtype, run_steps

__all__ = ["rwkv7_step", "reference"]


def rwkv7_step(r_t, w_t, k_t, v_t, a_t, b_t, state, scale=1.0):
    """One recurrence step. r_t, w_t, k_t, a_t, b_t (B, H, K); v_t (B, H, V); state (B, H, K, V).

    scale None means K**-0.5. Returns (o_t (B, H, V) in r_t's dtype, new state in the accumulation dtype).
    Does not mutate state.
    """
    acc = acc_dtype(r_t.dtype)
    scale = r_t.shape[-1] ** -0.5 if scale is None else scale
    r, w, k, v, a, b = (t.to(acc) for t in (r_t, w_t, k_t, v_t, a_t, b_t))
    S = state.to(acc)                                                   # (B, H, K, V)
    sa = torch.einsum("bhk,bhkv->bhv", a, S)                            # (B, H, V)
    S = w.exp()[..., None] * S + b[..., :, None] * sa[..., None, :]     # (B, H, K, V)
    S = S + k[..., :, None] * v[..., None, :]                           # (B, H, K, V)
    o = torch.einsum("bhk,bhkv->bhv", r * scale, S)                     # (B, H, V)
    return o.to(r_t.dtype), S


def reference(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False):
    """Sequential oracle: a Python loop over time with fp32 (or wider) state accumulation."""
    return run_steps(rwkv7_step, (r, w, k, v, a, b), v.shape[-1], scale, initial_state, output_final_state)
