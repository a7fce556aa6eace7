"""Selective scan: the S6 recurrence of Mamba-1, in JAX.

Paper: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023), Alg. 2 / Sec. 3.
Reference implementation: mamba_ssm ``selective_scan_fn`` / ``selective_scan_ref`` (state-spaces/mamba); the
same shapes and semantics as transformers' ``mamba_selective_scan`` (models/mamba/modeling_mamba.py).
Mirrors hybridc_torch/kernels/selective_scan.py; the reference scans over time with ``lax.scan``.

Per channel d and state index n (ZOH for A, Euler for B, as in the reference):
    dt_t     = softplus(delta_t + delta_bias)            (if delta_softplus, else delta_t + delta_bias)
    h_t      = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t      = sum_n C_t * h_t + D * u_t
    out_t    = y_t * silu(z_t)                           (if z is given)

Glossary of dimension letters:
    B: batch    D: channels (d_inner)    L: sequence length    N: state size    G: groups of B/C (D % G == 0)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._dispatch import choose

__all__ = ["selective_scan", "selective_scan_step", "reference"]


def _acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _expand_groups(M: jax.Array, channels: int) -> jax.Array:
    """B_t or C_t of shape (B, N) or (B, G, N) -> broadcastable (B, D|1, N)."""
    if M.ndim == 2:
        return M[:, None, :]  # (B, 1, N)
    groups = M.shape[1]
    return jnp.repeat(M, channels // groups, axis=1)  # (B, D, N)


def _discretize_dt(delta: jax.Array, delta_bias, delta_softplus: bool) -> jax.Array:
    """delta (B, D, ...) plus bias (D,) broadcast along the channel dim, then optional softplus (fp32)."""
    dt = delta.astype(_acc_dtype(delta.dtype))
    if delta_bias is not None:
        shape = (-1,) + (1,) * (dt.ndim - 2)
        dt = dt + delta_bias.astype(dt.dtype).reshape(shape)
    return jax.nn.softplus(dt) if delta_softplus else dt


def selective_scan_step(state, u_t, delta_t, A, B_t, C_t, D=None, z_t=None, delta_bias=None,
                        delta_softplus=False):
    """One step of the recurrence; returns (y_t (B, D), new_state (B, D, N)).

    state (B, D, N) fp32; u_t, delta_t, z_t (B, D); A (D, N); B_t, C_t (B, N) or (B, G, N); D (D,).
    """
    acc = _acc_dtype(u_t.dtype)
    channels = u_t.shape[1]
    dt = _discretize_dt(delta_t, delta_bias, delta_softplus)  # (B, D)
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
    acc = _acc_dtype(u.dtype)
    dt = _discretize_dt(delta, delta_bias, delta_softplus)  # (B, D, L)
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


_IMPLS = {"reference": reference}


def _pick(impl: str):
    return choose("selective_scan", _IMPLS, impl, "reference")


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, initial_state=None, impl="auto"):
    """mamba_ssm ``selective_scan_fn`` semantics.

    u, delta (B, D, L); A (D, N); B, C (B, N, L) or (B, G, N, L); D (D,); z (B, D, L); delta_bias (D,);
    initial_state (B, D, N). Returns out (B, D, L), or (out, last_state (B, D, N) fp32) if return_last_state.
    """
    out, last_state = _pick(impl)(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    return (out, last_state) if return_last_state else out
