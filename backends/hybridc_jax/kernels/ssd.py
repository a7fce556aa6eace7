"""SSD: the scalar-decay state space recurrence of Mamba-2, in JAX.

Paper: Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space
Duality" (ICML 2024), Sec. 6-7. Reference implementation: mamba_ssm ``mamba_chunk_scan_combined``
(mamba_ssm/ops/triton/ssd_combined.py; its ``ssd_minimal_discrete`` gives the chunked form) and transformers'
``mamba2_chunk_scan`` (models/mamba2/modeling_mamba2.py). Mirrors hybridc_torch/kernels/ssd.py: the reference is the
sequential recurrence (``lax.scan``); ``chunk_size`` only matters to chunked/parallel implementations and is ignored.

Per head h (heads share B/C within a group g = h // (H / G)):
    dt_t  = softplus(dt_t + dt_bias)  (if dt_softplus, else dt_t + dt_bias)
    S_t   = exp(dt_t * A_h) * S_{t-1} + dt_t * x_t B_t^T          S: (P, N)
    y_t   = S_t C_t + D_h * x_t
    out_t = y_t * silu(z_t)                                       (if z is given)

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups of B/C (H % G == 0)    N: state size
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._dispatch import choose

__all__ = ["ssd", "ssd_step", "reference"]


def _acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _heads_from_groups(M: jax.Array, heads: int) -> jax.Array:
    """(..., G, N) -> (..., H, N): head h reads group h // (H / G)."""
    return jnp.repeat(M, heads // M.shape[-2], axis=-2)


def _discretize_dt(dt: jax.Array, dt_bias, dt_softplus: bool) -> jax.Array:
    """dt (..., H) plus bias (H,), then optional softplus, in the accumulation dtype."""
    dt = dt.astype(_acc_dtype(dt.dtype))
    if dt_bias is not None:
        dt = dt + dt_bias.astype(dt.dtype)
    return jax.nn.softplus(dt) if dt_softplus else dt


def _skip(D: jax.Array, x: jax.Array) -> jax.Array:
    """D (H,) or (H, P) times x (..., H, P)."""
    D = D.astype(x.dtype)
    return (D[:, None] if D.ndim == 1 else D) * x


def ssd_step(state, x_t, dt_t, A, B_t, C_t, D=None, z_t=None, dt_bias=None, dt_softplus=False):
    """One step; returns (y_t (B, H, P), new_state (B, H, P, N)).

    state (B, H, P, N) fp32; x_t, z_t (B, H, P); dt_t (B, H); A (H,); B_t, C_t (B, G, N); D (H,) or (H, P).
    """
    acc = _acc_dtype(x_t.dtype)
    heads = x_t.shape[1]
    dt = _discretize_dt(dt_t, dt_bias, dt_softplus)  # (B, H)
    x = x_t.astype(acc)  # (B, H, P)
    B_h = _heads_from_groups(B_t.astype(acc), heads)  # (B, H, N)
    C_h = _heads_from_groups(C_t.astype(acc), heads)  # (B, H, N)
    decay = jnp.exp(dt * A.astype(acc))[..., None, None]  # (B, H, 1, 1)
    new_state = decay * state.astype(acc) + (dt[..., None] * x)[..., None] * B_h[:, :, None, :]  # (B, H, P, N)
    y = jnp.einsum("bhpn,bhn->bhp", new_state, C_h)  # (B, H, P)
    if D is not None:
        y = y + _skip(D, x)
    if z_t is not None:
        y = y * jax.nn.silu(z_t.astype(acc))
    return y.astype(x_t.dtype), new_state


def reference(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False):
    """Sequential oracle (``lax.scan`` over time, fp32 state). Returns (y (B, L, H, P), final_states (B, H, P, N))."""
    batch, _, heads, head_dim = x.shape
    acc = _acc_dtype(x.dtype)
    dt = _discretize_dt(dt, dt_bias, dt_softplus)  # (B, L, H)
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
        y = y + _skip(D, x.astype(acc))
    if z is not None:
        y = y * jax.nn.silu(z.astype(acc))
    return y.astype(x.dtype), S


_IMPLS = {"reference": reference}


def _pick(impl: str):
    return choose("ssd", _IMPLS, impl, "reference")


def ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False,
        return_final_states=False, *, impl="auto"):
    """mamba_ssm ``mamba_chunk_scan_combined`` semantics (dt_limit fixed to (0, inf)).

    x (B, L, H, P); dt (B, L, H); A (H,); B, C (B, L, G, N); D (H,) or (H, P); z (B, L, H, P); dt_bias (H,);
    initial_states (B, H, P, N). Returns y (B, L, H, P), or (y, final_states (B, H, P, N) fp32).
    """
    y, final = _pick(impl)(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, dt_softplus)
    return (y, final) if return_final_states else y
