"""What the delta-rule family's sequential references share (delta rule, gated delta rule, RWKV-7): the fp32 state
and the ``lax.scan`` over time that calls one op's step function. Each op's recurrence stays in its ``naive.py``."""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: at least fp32 (fp64 inputs stay fp64)."""
    return jnp.promote_types(dtype, jnp.float32)


def run_steps(step, xs, v_dim: int, scale, initial_state=None, output_final_state=False):
    """Sequential oracle: ``lax.scan`` over time with an fp32 (or wider) state S (B, H, K, V).

    xs: the per-step inputs, each (B, T, H, .), the first of them (q or r) setting B, H, K and the output dtype;
    ``step(*x_t, S, scale) -> (o_t (B, H, V), S)``. Returns (o (B, T, H, V), S or None)."""
    first = xs[0]
    B, _, H, K = first.shape
    acc = acc_dtype(first.dtype)
    S = jnp.zeros((B, H, K, v_dim), acc) if initial_state is None else initial_state.astype(acc)  # (B, H, K, V)

    def cell(S, x_t):
        o_t, S = step(*x_t, S, scale)                                     # (B, H, V)
        return S, o_t

    S, o = lax.scan(cell, S, tuple(jnp.moveaxis(t, 1, 0) for t in xs))    # (T, B, H, V)
    return jnp.moveaxis(o, 0, 1).astype(first.dtype), (S if output_final_state else None)  # (B, T, H, V)
