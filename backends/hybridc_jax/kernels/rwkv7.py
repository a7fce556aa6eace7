"""RWKV-7's generalized delta rule (diagonal-plus-low-rank state transition), in JAX.

Paper: Peng et al., "RWKV-7 "Goose" with Expressive Dynamic State Evolution" (2025, arXiv:2503.14456).
Reference implementation: flash-linear-attention, ``fla.ops.rwkv7`` (``chunk_rwkv7`` / ``fused_recurrent_rwkv7``
signature, [B, T, H, K] layout, state stored (K, V)) and ``fla/ops/generalized_delta_rule/dplr/naive.py``
(``dplr_recurrence``) for the math. Mirrors hybridc_torch/kernels/rwkv7.py with ``lax.scan`` over time.

Per head, with state S (K, V), log decay w_t (K,) and one step t (a^T S uses the state *before* the decay):
    S_t = exp(w_t)[:, None] * S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T      # (K, V)
    o_t = S_t^T (scale * r_t)                                                 # (V,)
(In RWKV's own (V, K) layout this reads S = S diag(exp(w)) + (S a) b^T + v k^T.)  RWKV-7 uses a = -kk, b = kk * a_gate.

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/receptance head dim, V value head dim.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ._dispatch import choose

__all__ = ["rwkv7", "rwkv7_step", "reference"]


def _acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: at least fp32 (fp64 inputs stay fp64)."""
    return jnp.promote_types(dtype, jnp.float32)


def rwkv7_step(r_t, w_t, k_t, v_t, a_t, b_t, state, scale=1.0):
    """One recurrence step. r_t, w_t, k_t, a_t, b_t (B, H, K); v_t (B, H, V); state (B, H, K, V).

    scale None means K**-0.5. Returns (o_t (B, H, V) in r_t's dtype, new state in the accumulation dtype).
    """
    acc = _acc_dtype(r_t.dtype)
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
    B, T, H, K = r.shape
    V = v.shape[-1]
    acc = _acc_dtype(r.dtype)
    if initial_state is None:
        S = jnp.zeros((B, H, K, V), acc)                                # (B, H, K, V)
    else:
        S = initial_state.astype(acc)                                   # (B, H, K, V)

    def cell(S, xs):
        o_t, S = rwkv7_step(*xs, S, scale)                              # (B, H, V)
        return S, o_t

    S, o = lax.scan(cell, S, tuple(jnp.moveaxis(t, 1, 0) for t in (r, w, k, v, a, b)))   # (T, B, H, V)
    return jnp.moveaxis(o, 0, 1).astype(r.dtype), (S if output_final_state else None)     # (B, T, H, V)


_IMPLS = {"reference": reference}


def _pick(impl: str):
    return choose("rwkv7", _IMPLS, impl, "reference")


def rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, *, impl="auto"):
    """RWKV-7 generalized delta rule over a sequence, as fla's ``chunk_rwkv7`` (w = log decay, state (K, V)).

    r, w, k, a, b (B, T, H, K); v (B, T, H, V); scale 1.0 (None means K**-0.5);
    initial_state (B, H, K, V) or None. Returns (o (B, T, H, V), final_state (B, H, K, V) or None).
    """
    return _pick(impl)(r, w, k, v, a, b, scale=scale, initial_state=initial_state,
                       output_final_state=output_final_state)
