"""SSD: the scalar-decay state space recurrence of Mamba-2, in JAX.

Paper: Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space
Duality" (ICML 2024), Sec. 6-7. Reference implementation: mamba_ssm ``mamba_chunk_scan_combined``
(mamba_ssm/ops/triton/ssd_combined.py; its ``ssd_minimal_discrete`` gives the chunked form) and transformers'
``mamba2_chunk_scan`` (models/mamba2/modeling_mamba2.py). Mirrors hybridc_torch/kernels/ssd.py: the reference is the
sequential recurrence (``lax.scan``); ``chunk_size`` only matters to chunked/parallel implementations and is ignored.

Fast form (``impl="chunk"``; ``auto`` picks "scan_chunk": the reference's values with this form's gradients,
see `scan_chunk_ssd`): the SSD chunked algorithm (paper Sec. 6), as torch's ``chunk_ssd``.
With the log-decays a_t = dt_t A_h and their within-chunk cumulative sums g_t (log space; decays only ever as exp of
differences g_t - g_s <= 0, never divisions by cumulative products), for each chunk of T steps:
    intra   y_t  = sum_{s<=t} (C_t . B_s) exp(g_t - g_s) dt_s x_s          (masked T x T matmuls)
    states  S_c  = sum_s exp(g_T - g_s) dt_s x_s B_s^T                      (P x N per chunk and head)
    passing S_in(c+1) = exp(g_T(c)) S_in(c) + S_c                          (``lax.scan`` over chunks)
    inter   y_t += exp(g_t) C_t . S_in(c)
All chunks' matmuls run batched; only the state pass is sequential. fp32 accumulation; ``jax.grad`` differentiates
it (masked entries are set to -inf *before* the exp, so no inf * 0 reaches the gradient).

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
from .gated_delta_rule import scan_forward_chunk_backward  # shared "scan_chunk" helper

__all__ = ["ssd", "ssd_step", "reference", "chunk_ssd", "scan_chunk_ssd"]


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


def _pad_time(v: jax.Array, pad: int) -> jax.Array:
    """Zero-pad axis 1 (time) by `pad` steps."""
    return jnp.pad(v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2)) if pad else v


def _pass_states(S0, chunk_decay, states):
    """S_in(c+1) = decay_c S_in(c) + S_c. S0 (B, G, hg, P, N); chunk_decay (B, c, G, hg); states (B, c, G, hg, P, N).

    Returns (the states entering each chunk (B, c, G, hg, P, N), the final state (B, G, hg, P, N)).
    """
    def cell(S, xs):
        decay, S_c = xs
        return decay[..., None, None] * S + S_c, S

    S, starts = lax.scan(cell, S0, (jnp.moveaxis(chunk_decay, 1, 0), jnp.moveaxis(states, 1, 0)))
    return jnp.moveaxis(starts, 0, 1), S


def chunk_ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False):
    """Chunked SSD, same contract as `reference`; ``chunk_size`` (T) is honoured. Returns (y, final_states)."""
    batch, length, heads, head_dim = x.shape
    groups, state = B.shape[-2], B.shape[-1]
    acc = _acc_dtype(x.dtype)
    xa = x.astype(acc)
    dt = _discretize_dt(dt, dt_bias, dt_softplus)  # (B, L, H)
    S0 = initial_states.astype(acc) if initial_states is not None else \
        jnp.zeros((batch, heads, head_dim, state), acc)  # (B, H, P, N)
    if length == 0:
        return jnp.zeros((batch, 0, heads, head_dim), x.dtype), S0
    T = max(1, min(int(chunk_size), length))
    nc = -(-length // T)
    pad = nc * T - length  # trailing padding: zero input and zero log-decay leave outputs and final state unchanged
    hg = heads // groups  # heads per group
    xdt = _pad_time(xa * dt[..., None], pad)  # (B, L', H, P)
    la = _pad_time(dt * A.astype(acc), pad)  # (B, L', H) log-decays (<= 0 for A < 0)
    # chunked layouts; heads split as (G, hg) so B/C are shared without repeating them per head
    xdt = xdt.reshape(batch, nc, T, groups, hg, head_dim).transpose(0, 1, 3, 4, 2, 5)  # (B, c, G, hg, T, P)
    Bc = _pad_time(B.astype(acc), pad).reshape(batch, nc, T, groups, state).swapaxes(2, 3)  # (B, c, G, T, N)
    Cc = _pad_time(C.astype(acc), pad).reshape(batch, nc, T, groups, state).swapaxes(2, 3)  # (B, c, G, T, N)
    g = jnp.cumsum(la.reshape(batch, nc, T, groups, hg).transpose(0, 1, 3, 4, 2), axis=-1)  # (B, c, G, hg, T)
    g_last = g[..., -1:]  # (B, c, G, hg, 1)
    # intra-chunk (diagonal blocks): masked decay-weighted "attention"
    causal = jnp.tril(jnp.ones((T, T), bool))
    seg = g[..., :, None] - g[..., None, :]  # (B, c, G, hg, T, T): g_t - g_s
    # masked on both sides of the exp (exponent 0 above the diagonal, so no inf * 0 in the gradient); the same mask
    # as exp(where(causal, seg, -inf)), which XLA compiled markedly slower under jax.grad
    decay = jnp.where(causal, jnp.exp(jnp.where(causal, seg, 0.0)), 0.0)  # (B, c, G, hg, T, T)
    scores = Cc @ Bc.swapaxes(-1, -2)  # (B, c, G, T, T): C_t . B_s
    y = (decay * scores[:, :, :, None]) @ xdt  # (B, c, G, hg, T, P)
    # per-chunk states from a zero start: S_c = sum_s exp(g_T - g_s) xdt_s B_s^T
    w = jnp.exp(g_last - g)  # (B, c, G, hg, T)
    states = (xdt * w[..., None]).swapaxes(-1, -2) @ Bc[:, :, :, None]  # (B, c, G, hg, P, N)
    S_in, S = _pass_states(S0.reshape(batch, groups, hg, head_dim, state), jnp.exp(g_last[..., 0]), states)
    # contribution of the entering state: exp(g_t) C_t . S_in
    y = y + jnp.exp(g)[..., None] * (Cc[:, :, :, None] @ S_in.swapaxes(-1, -2))  # (B, c, G, hg, T, P)
    y = y.transpose(0, 1, 4, 2, 3, 5).reshape(batch, nc * T, heads, head_dim)[:, :length]  # (B, L, H, P)
    if D is not None:
        y = y + _skip(D, xa)
    if z is not None:
        y = y * jax.nn.silu(z.astype(acc))
    return y.astype(x.dtype), S.reshape(batch, heads, head_dim, state)


def scan_chunk_ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                   dt_softplus=False):
    """Values from the ``lax.scan`` reference, gradients from `chunk_ssd` (see
    ``gated_delta_rule.scan_forward_chunk_backward``: measured, the scan is the faster forward on CPU)."""
    def ref(*a):
        return reference(*a[:5], chunk_size, *a[5:], dt_softplus)

    def chunked(*a):
        return chunk_ssd(*a[:5], chunk_size, *a[5:], dt_softplus)

    return scan_forward_chunk_backward(ref, chunked, x, dt, A, B, C, D, z, dt_bias, initial_states)


_IMPLS = {"reference": reference, "chunk": chunk_ssd, "scan_chunk": scan_chunk_ssd}


def _auto(device: str = "cpu") -> str:
    """The scan forward with the chunked backward on every device for now (GPU-specific choices come later)."""
    return "scan_chunk"


def _pick(impl: str):
    return choose("ssd", _IMPLS, impl, _auto(jax.default_backend()))


def ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False,
        return_final_states=False, *, impl="auto"):
    """mamba_ssm ``mamba_chunk_scan_combined`` semantics (dt_limit fixed to (0, inf)).

    x (B, L, H, P); dt (B, L, H); A (H,); B, C (B, L, G, N); D (H,) or (H, P); z (B, L, H, P); dt_bias (H,);
    initial_states (B, H, P, N). Returns y (B, L, H, P), or (y, final_states (B, H, P, N) fp32).
    impl: "auto" ("scan_chunk": scan forward, chunked backward), "chunk", "scan_chunk" or "reference".
    """
    y, final = _pick(impl)(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, dt_softplus)
    return (y, final) if return_final_states else y
