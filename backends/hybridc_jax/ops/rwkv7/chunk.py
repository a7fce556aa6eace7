"""RWKV-7, chunked (``impl="chunk"``) and the scan forward with its backward (``impl="scan_chunk"``, auto).

The chunked form ``chunk_rwkv7`` (chunk 16, an exact pairwise fallback past the fp32 overflow bound), with
``lax.scan`` over chunks (``.._chunk.pass_states``) and ``jax.grad`` through it; ``impl="scan_chunk"`` (what
``auto`` picks): the reference's forward when not differentiated, the chunked form under ``jax.grad``
(``.._chunk.scan_forward_chunk_backward``). Reference implementation: fla's ``chunk_rwkv7`` (``fla/ops/rwkv7``).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/receptance head dim, V value head dim, C chunk length,
    N chunks.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from .._chunk import chunk_layout, chunked, pass_states, scan_forward_chunk_backward, unit_lower_inverse
from .naive import reference

__all__ = ["chunk_rwkv7", "scan_chunk_rwkv7"]


# The factorised intra-chunk scores multiply exp(G_i) by exp(-G_j) (G the in-chunk cumulative log decay, <= 0 for
# decays): safe while |G| stays well inside the dtype's exponent range (fp32 overflows at exp(88.7)). RWKV-7's decays
# (w > -0.607 per step) reach at most ~9.7 over a 16-step chunk. Past the bound the exact pairwise form is used.
_FACTOR_BOUND = {jnp.dtype(jnp.float32): 60.0, jnp.dtype(jnp.float64): 600.0}


def _pair_scores(x, y, gx, gy, strict):
    """Exact sum_k x_ik y_jk exp(gx_ik - gy_jk) for j < i (strict) or j <= i, zero elsewhere: (..., C, C).

    Takes the exponent differences pairwise, (..., C, C, K), so nothing overflows for any decay (more memory).
    """
    C = x.shape[-2]
    keep = jnp.tril(jnp.ones((C, C), bool), -1 if strict else 0)[..., None]   # (C, C, 1)
    diff = jnp.where(keep, gx[..., :, None, :] - gy[..., None, :, :], 0.0)
    return (x[..., :, None, :] * y[..., None, :, :] * jnp.where(keep, jnp.exp(diff), 0.0)).sum(-1)


def _factorised(a, b, k, r, G, Gp, bound):
    """The scores as one batched matmul of (a e^{G_{i-1}} | r e^{G_i}) by (b e^{-G_j} | k e^{-G_j}).

    G is clamped to [-bound, ...] so that this stays finite (and NaN-free) where it is evaluated but not selected.
    """
    C = G.shape[-2]
    Gc, Gpc = jnp.maximum(G, -bound), jnp.maximum(Gp, -bound)
    e_neg = jnp.exp(-Gc)                                                # (..., C, K)
    lhs = jnp.concatenate([a * jnp.exp(Gpc), r * jnp.exp(Gc)], axis=-2)    # (..., 2C, K)
    rhs = jnp.concatenate([b * e_neg, k * e_neg], axis=-2)              # (..., 2C, K)
    sc = lhs @ jnp.swapaxes(rhs, -1, -2)                                # (..., 2C, 2C)
    return (jnp.tril(sc[..., :C, :C], -1), jnp.tril(sc[..., :C, C:], -1),
            jnp.tril(sc[..., C:, :C]), jnp.tril(sc[..., C:, C:]))


def _pairwise(a, b, k, r, G, Gp):
    """The scores with exact pairwise exponent differences (any decay; (..., C, C, K) intermediates)."""
    return (_pair_scores(a, b, Gp, G, True), _pair_scores(a, k, Gp, G, True),
            _pair_scores(r, b, G, G, False), _pair_scores(r, k, G, G, False))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _scores(a, b, k, r, G, Gp, bound):
    """The four intra-chunk score matrices (m_ab, m_ak strictly lower; m_rb, m_rk lower incl.), each (..., C, C).

    Factorised while max |G| <= bound, else exact pairwise, by ``lax.cond``. A custom VJP takes the same branch in
    the backward (``jax.vjp`` of that branch, recomputed): differentiating ``lax.cond`` directly would make the
    forward emit zero-filled residuals of both branches, the pairwise branch's (..., C, C, K) ones included
    (measured: 2x slower forward+backward). Under vmap both branches run (a select).
    """
    fact = functools.partial(_factorised, bound=bound)
    return lax.cond(jnp.max(jnp.abs(G)) <= bound, fact, _pairwise, a, b, k, r, G, Gp)


def _scores_fwd(a, b, k, r, G, Gp, bound):
    return _scores(a, b, k, r, G, Gp, bound), (a, b, k, r, G, Gp)


def _scores_bwd(bound, res, cotangents):
    def vjp_of(fn):
        return lambda res, ct: jax.vjp(fn, *res)[1](ct)

    fact = functools.partial(_factorised, bound=bound)
    return lax.cond(jnp.max(jnp.abs(res[4])) <= bound, vjp_of(fact), vjp_of(_pairwise), res, cotangents)


_scores.defvjp(_scores_fwd, _scores_bwd)


def chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, chunk_size=16):
    """Chunked generalized (diagonal-plus-low-rank) delta rule; same contract as ``reference``; chunk 16 by default.

    Inside a chunk (G_i = w_1 + ... + w_i per key channel, G_0 = 0; S0 the state entering the chunk), the
    low-rank reads x_i = S_{i-1}^T a_i (V,) solve a unit-triangular system
        x_i = (a_i e^{G_{i-1}})^T S0 + sum_{j<i} (a_i e^{G_{i-1}-G_j}).b_j x_j + (a_i e^{G_{i-1}-G_j}).k_j v_j,
    i.e. X = W S0 + U with W = T (a e^{G_prev}), U = T M_ak v, T = (I - M_ab)^{-1}. Then
        O = (scale r e^{G}) S0 + M_rb X + M_rk v              (pair scores with e^{G_i - G_j}, j <= i)
        S_C = (diag(e^{G_C}) + (b e^{G_C-G})^T W) S0 + (b e^{G_C-G})^T U + (k e^{G_C-G})^T v,
    so the sequential pass (``pass_states``, a ``lax.scan``) is a diagonal-plus-rank-C update of the state and the
    chunk's outputs O per chunk; everything else is batched over chunks (chunk-major layouts). The pair scores
    are factorised matmuls (a e^{G_{i-1}}) . (b e^{-G_j}) while max |G| <= _FACTOR_BOUND (the fp32 overflow bound
    that sets chunk 16), else exact pairwise (`_scores`). ``jax.grad`` differentiates it.
    """
    return chunked(functools.partial(_dplr_chunks, r, w, k, v, a, b), r, v, scale, initial_state,
                   output_final_state, chunk_size)


def _dplr_chunks(r, w, k, v, a, b, S, C, pad, acc, scale):
    """The chunks of `chunk_rwkv7` from the entry state S (B, H, K, V): (o (N, B, H, C, V), final state)."""
    b_t, k_t = (chunk_layout(t.astype(acc), C, pad, keys_last=True) for t in (b, k))   # (N, B, H, K, C)
    r, w, k, v, a, b = (chunk_layout(t.astype(acc), C, pad) for t in (r, w, k, v, a, b))   # (N, B, H, C, K|V)
    r = r * scale
    G = jnp.cumsum(w, axis=-2)                                          # (N, B, H, C, K) inclusive
    Gp = G - w                                                          # (N, B, H, C, K) exclusive (G_{i-1})
    a_p = a * jnp.exp(Gp)                                               # a_i e^{G_{i-1}}
    r_g = r * jnp.exp(G)                                                # scale r_i e^{G_i}
    m_ab, m_ak, m_rb, m_rk = _scores(a, b, k, r, G, Gp, _FACTOR_BOUND.get(jnp.dtype(acc), 60.0))
    t_inv = unit_lower_inverse(-m_ab)                                   # (N, B, H, C, C)
    w_s = t_inv @ a_p                                                   # (N, B, H, C, K)   X = w_s S0 + u
    u = t_inv @ (m_ak @ v)                                              # (N, B, H, C, V)
    q_eff = r_g + m_rb @ w_s                                            # (N, B, H, C, K)   O = q_eff S0 + o_c
    o_c = m_rb @ u + m_rk @ v                                           # (N, B, H, C, V)
    to_end = jnp.swapaxes(jnp.exp(G[..., -1:, :] - G), -1, -2)          # (N, B, H, K, C) e^{G_C - G_j}
    b_e, k_e = b_t * to_end, k_t * to_end                               # (N, B, H, K, C)
    decay = jnp.exp(G[..., -1, :])[..., None]                          # (N, B, H, K, 1)
    return pass_states(S, decay, b_e, w_s, b_e @ u + k_e @ v, q_eff, o_c)   # (N, B, H, C, V), (B, H, K, V)


def scan_chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, chunk_size=16):
    """Values from the ``lax.scan`` reference, gradients from the chunked form (see
    ``.._chunk.scan_forward_chunk_backward``)."""
    return scan_forward_chunk_backward(
        lambda *x: reference(*x[:6], scale, x[6], output_final_state),
        lambda *x: chunk_rwkv7(*x[:6], scale, x[6], output_final_state, chunk_size), r, w, k, v, a, b, initial_state)
