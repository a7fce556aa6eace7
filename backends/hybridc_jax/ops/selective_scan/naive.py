"""Selective scan, the sequential reference (``impl="reference"``, the oracle) and the decoding step, in JAX.

Mamba-1's S6 recurrence scanned over time with ``lax.scan`` and an fp32 state (fp64 for fp64 inputs), as mamba_ssm's
``selective_scan_ref`` (state-spaces/mamba). Mirrors hybridc_torch/ops/selective_scan/naive.py.

Glossary of dimension letters:
    B: batch    D: channels (d_inner)    L: sequence length    N: state size    G: groups of B/C (D % G == 0)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["reference", "selective_scan_step"]


def acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _expand_groups(M: jax.Array, channels: int) -> jax.Array:
    """B_t or C_t of shape (B, N) or (B, G, N) -> broadcastable (B, D|1, N)."""
    if M.ndim == 2:
        return M[:, None, :]  # (B, 1, N)
    groups = M.shape[1]
    return jnp.repeat(M, channels // groups, axis=1)  # (B, D, N)


def discretize_dt(delta: jax.Array, delta_bias, delta_softplus: bool) -> jax.Array:
    """delta (B, D, ...) plus bias (D,) broadcast along the channel dim, then optional softplus (fp32)."""
    dt = delta.astype(acc_dtype(delta.dtype))
    if delta_bias is not None:
        shape = (-1,) + (1,) * (dt.ndim - 2)
        dt = dt + delta_bias.astype(dt.dtype).reshape(shape)
    return jax.nn.softplus(dt) if delta_softplus else dt


def selective_scan_step(state, u_t, delta_t, A, B_t, C_t, D=None, z_t=None, delta_bias=None,
                        delta_softplus=False):
    """One step of the recurrence; returns (y_t (B, D), new_state (B, D, N)).

    state (B, D, N) fp32; u_t, delta_t, z_t (B, D); A (D, N); B_t, C_t (B, N) or (B, G, N); D (D,).
    """
    acc = acc_dtype(u_t.dtype)
    channels = u_t.shape[1]
    dt = discretize_dt(delta_t, delta_bias, delta_softplus)  # (B, D)
    u = u_t.astype(acc)  # (B, D)
    dA = jnp.exp(dt[..., None] * A.astype(acc))  # (B, D, N)
    dBu = (dt * u)[..., None] * _expand_groups(B_t.astype(acc), channels)  # (B, D, N)
    new_state = dA * state.astype(acc) + dBu  # (B, D, N)
    y = (new_state * _expand_groups(C_t.astype(acc), channels)).sum(-1)  # (B, D)
    if D is not None:
        y = y + D.astype(acc) * u
    if z_t is not None:
        y = y * jax.nn.silu(z_t.astype(acc))
    return y.astype(u_t.dtype), new_state


def reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None):
    """Sequential oracle: ``lax.scan`` over time with an fp32 state. Returns (out (B, D, L), last_state (B, D, N))."""
    batch, channels, _ = u.shape
    acc = acc_dtype(u.dtype)
    dt = discretize_dt(delta, delta_bias, delta_softplus)  # (B, D, L)
    h = initial_state.astype(acc) if initial_state is not None else \
        jnp.zeros((batch, channels, A.shape[-1]), acc)  # (B, D, N)

    def cell(h, inputs):
        u_t, dt_t, B_t, C_t = inputs
        y_t, h = selective_scan_step(h, u_t, dt_t, A, B_t, C_t)
        return h, y_t  # (B, D, N), (B, D)

    time_major = [jnp.moveaxis(v, -1, 0) for v in (u.astype(acc), dt, B, C)]  # (L, ...)
    h, ys = lax.scan(cell, h, time_major)  # (B, D, N), (L, B, D)
    y = jnp.moveaxis(ys, 0, -1)  # (B, D, L)
    if D is not None:
        y = y + D.astype(acc)[:, None] * u.astype(acc)
    if z is not None:
        y = y * jax.nn.silu(z.astype(acc))
    return y.astype(u.dtype), h
