"""SSD, the sequential reference (``impl="reference"``, the oracle) and the decoding step, in JAX.

Mamba-2's scalar-decay state space recurrence scanned over time with ``lax.scan`` and an fp32 state (fp64 for fp64
inputs); ``chunk_size`` only matters to the chunked forms and is ignored here. Mirrors
hybridc_torch/ops/ssd/naive.py.

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups of B/C (H % G == 0)    N: state size
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["reference", "ssd_step"]


def acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _heads_from_groups(M: jax.Array, heads: int) -> jax.Array:
    """(..., G, N) -> (..., H, N): head h reads group h // (H / G)."""
    return jnp.repeat(M, heads // M.shape[-2], axis=-2)


def discretize_dt(dt: jax.Array, dt_bias, dt_softplus: bool) -> jax.Array:
    """dt (..., H) plus bias (H,), then optional softplus, in the accumulation dtype."""
    dt = dt.astype(acc_dtype(dt.dtype))
    if dt_bias is not None:
        dt = dt + dt_bias.astype(dt.dtype)
    return jax.nn.softplus(dt) if dt_softplus else dt


def skip(D: jax.Array, x: jax.Array) -> jax.Array:
    """D (H,) or (H, P) times x (..., H, P)."""
    D = D.astype(x.dtype)
    return (D[:, None] if D.ndim == 1 else D) * x


def ssd_step(state, x_t, dt_t, A, B_t, C_t, D=None, z_t=None, dt_bias=None, dt_softplus=False):
    """One step; returns (y_t (B, H, P), new_state (B, H, P, N)).

    state (B, H, P, N) fp32; x_t, z_t (B, H, P); dt_t (B, H); A (H,); B_t, C_t (B, G, N); D (H,) or (H, P).
    """
    acc = acc_dtype(x_t.dtype)
    heads = x_t.shape[1]
    dt = discretize_dt(dt_t, dt_bias, dt_softplus)  # (B, H)
    x = x_t.astype(acc)  # (B, H, P)
    B_h = _heads_from_groups(B_t.astype(acc), heads)  # (B, H, N)
    C_h = _heads_from_groups(C_t.astype(acc), heads)  # (B, H, N)
    decay = jnp.exp(dt * A.astype(acc))[..., None, None]  # (B, H, 1, 1)
    new_state = decay * state.astype(acc) + (dt[..., None] * x)[..., None] * B_h[:, :, None, :]  # (B, H, P, N)
    y = jnp.einsum("bhpn,bhn->bhp", new_state, C_h)  # (B, H, P)
    if D is not None:
        y = y + skip(D, x)
    if z_t is not None:
        y = y * jax.nn.silu(z_t.astype(acc))
    return y.astype(x_t.dtype), new_state


def reference(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False):
    """Sequential oracle (``lax.scan`` over time, fp32 state). Returns (y (B, L, H, P), final_states (B, H, P, N))."""
    batch, _, heads, head_dim = x.shape
    acc = acc_dtype(x.dtype)
    dt = discretize_dt(dt, dt_bias, dt_softplus)  # (B, L, H)
    S = initial_states.astype(acc) if initial_states is not None else \
        jnp.zeros((batch, heads, head_dim, B.shape[-1]), acc)  # (B, H, P, N)

    def cell(S, inputs):
        x_t, dt_t, B_t, C_t = inputs
        y_t, S = ssd_step(S, x_t, dt_t, A, B_t, C_t)
        return S, y_t  # (B, H, P, N), (B, H, P)

    time_major = [jnp.moveaxis(v, 1, 0) for v in (x.astype(acc), dt, B, C)]  # (L, B, ...)
    S, ys = lax.scan(cell, S, time_major)  # (B, H, P, N), (L, B, H, P)
    y = jnp.moveaxis(ys, 0, 1)  # (B, L, H, P)
    if D is not None:
        y = y + skip(D, x.astype(acc))
    if z is not None:
        y = y * jax.nn.silu(z.astype(acc))
    return y.astype(x.dtype), S
