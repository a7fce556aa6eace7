"""SSD, the chunked form (``impl="chunk"``) and the scan forward with its backward (``impl="scan_chunk"``, auto).

The SSD chunked algorithm (Dao & Gu 2024, Sec. 6), as torch's ``chunk_ssd``; ``mamba_ssm``'s
``ssd_minimal_discrete`` gives the same chunked form.
With the log-decays a_t = dt_t A_h and their within-chunk cumulative sums g_t (log space; decays only ever as exp of
differences g_t - g_s <= 0, never divisions by cumulative products), for each chunk of T steps:
    intra   y_t  = sum_{s<=t} (C_t . B_s) exp(g_t - g_s) dt_s x_s          (masked T x T matmuls)
    states  S_c  = sum_s exp(g_T - g_s) dt_s x_s B_s^T                      (P x N per chunk and head)
    passing S_in(c+1) = exp(g_T(c)) S_in(c) + S_c                          (``lax.scan`` over chunks)
    inter   y_t += exp(g_t) C_t . S_in(c)
All chunks' matmuls run batched; only the state pass is sequential. fp32 accumulation; ``jax.grad`` differentiates
it (masked entries are set to -inf *before* the exp, so no inf * 0 reaches the gradient).

``scan_chunk_ssd`` (what ``auto`` picks): the reference's values with this form's gradients
(``.._chunk.scan_forward_chunk_backward``: measured, the scan is the faster forward on CPU).

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups of B/C (H % G == 0)    N: state size
    T: chunk length    c: chunks    hg: heads per group
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .._chunk import scan_forward_chunk_backward
from .naive import acc_dtype, discretize_dt, reference, skip

__all__ = ["chunk_ssd", "scan_chunk_ssd"]


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
    acc = acc_dtype(x.dtype)
    xa = x.astype(acc)
    dt = discretize_dt(dt, dt_bias, dt_softplus)  # (B, L, H)
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
        y = y + skip(D, xa)
    if z is not None:
        y = y * jax.nn.silu(z.astype(acc))
    return y.astype(x.dtype), S.reshape(batch, heads, head_dim, state)


def scan_chunk_ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                   dt_softplus=False):
    """Values from the ``lax.scan`` reference, gradients from `chunk_ssd` (see
    ``.._chunk.scan_forward_chunk_backward``: measured, the scan is the faster forward on CPU)."""
    def ref(*a):
        return reference(*a[:5], chunk_size, *a[5:], dt_softplus)

    def chunked(*a):
        return chunk_ssd(*a[:5], chunk_size, *a[5:], dt_softplus)

    return scan_forward_chunk_backward(ref, chunked, x, dt, A, B, C, D, z, dt_bias, initial_states)
