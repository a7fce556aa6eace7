"""RWKV-7's generalized delta rule, chunked (``impl="chunk"``, what ``auto`` picks on every device): the
diagonal-plus-low-rank transition solved per chunk with a unit-triangular inverse, in plain torch matmuls (the
derivation is ``chunk_rwkv7``'s docstring).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/receptance head dim, V value head dim, N chunks, C chunk size.
"""
from __future__ import annotations

import torch

from .._chunk import chunk_grid, chunk_layout, empty_sequence, from_chunks, start_state, state_pass, unit_lower_inverse
from .._naive import acc_dtype

__all__ = ["chunk_rwkv7"]


# The factorised intra-chunk scores multiply exp(G_i) by exp(-G_j) (G the in-chunk cumulative log decay, <= 0 for
# decays): safe while |G| stays well inside the dtype's exponent range (fp32 overflows at exp(88.7)). RWKV-7's decays
# (w > -0.607 per step) reach at most ~9.7 over a 16-step chunk. Past the bound the exact pairwise form is used.
_FACTOR_BOUND = {torch.float32: 60.0, torch.float64: 600.0}


def _pair_scores(x, y, gx, gy, strict):
    """Exact sum_k x_ik y_jk exp(gx_ik - gy_jk) for j < i (strict) or j <= i, zero elsewhere: (..., C, C).

    Takes the exponent differences pairwise, (..., C, C, K), so nothing overflows for any decay (more memory).
    """
    C = x.shape[-2]
    masked = torch.triu(torch.ones(C, C, dtype=torch.bool, device=x.device), 0 if strict else 1)
    diff = (gx[..., :, None, :] - gy[..., None, :, :]).masked_fill(masked[..., None], float("-inf"))
    return (x[..., :, None, :] * y[..., None, :, :] * diff.exp()).sum(-1)


def chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, chunk_size=16):
    """Chunked generalized (diagonal-plus-low-rank) delta rule; same contract as ``reference``; chunk 16 by default.

    Inside a chunk (G_i = w_1 + ... + w_i per key channel, G_0 = 0; S0 the state entering the chunk), the
    low-rank reads x_i = S_{i-1}^T a_i (V,) solve a unit-triangular system
        x_i = (a_i e^{G_{i-1}})^T S0 + sum_{j<i} (a_i e^{G_{i-1}-G_j}).b_j x_j + (a_i e^{G_{i-1}-G_j}).k_j v_j,
    i.e. X = W S0 + U with W = T (a e^{G_prev}), U = T M_ak v, T = (I - M_ab)^{-1}. Then
        O = (scale r e^{G}) S0 + M_rb X + M_rk v              (pair scores with e^{G_i - G_j}, j <= i)
        S_C = (diag(e^{G_C}) + (b e^{G_C-G})^T W) S0 + (b e^{G_C-G})^T U + (k e^{G_C-G})^T v,
    so the sequential pass is one (K, K) x (K, V) matmul-add per chunk; everything else is batched over chunks.
    The pair scores are factorised matmuls (a e^{G_{i-1}}) . (b e^{-G_j}) while max |G| <= _FACTOR_BOUND (the
    fp32 overflow bound that sets chunk 16), else exact pairwise. Autograd differentiates through it.
    """
    B, T, H, K = r.shape
    V = v.shape[-1]
    out_dtype, acc = r.dtype, acc_dtype(r.dtype)
    scale = K ** -0.5 if scale is None else scale
    S = start_state(r, V, initial_state, acc)                           # (B, H, K, V)
    if T == 0:
        return empty_sequence(r, V, S, output_final_state)
    C, pad, N = chunk_grid(T, chunk_size)
    r, w, k, v, a, b = (chunk_layout(t.to(acc), C, pad) for t in (r, w, k, v, a, b))   # (B, H, N, C, K|V)
    r = r * scale
    G = w.cumsum(-2)                                                    # (B, H, N, C, K) inclusive
    Gp = G - w                                                          # (B, H, N, C, K) exclusive (G_{i-1})
    a_p = a * Gp.exp()                                                  # a_i e^{G_{i-1}}
    r_g = r * G.exp()                                                   # scale r_i e^{G_i}
    bound = _FACTOR_BOUND.get(acc, 60.0)
    if bool(G.abs().amax() <= bound):                                   # factorised scores: 1 batched matmul
        e_neg = (-G).exp()
        lhs = torch.cat([a_p, r_g], dim=-2)                             # (B, H, N, 2C, K)
        rhs = torch.cat([b * e_neg, k * e_neg], dim=-2)                 # (B, H, N, 2C, K)
        sc = lhs @ rhs.transpose(-1, -2)                                # (B, H, N, 2C, 2C)
        m_ab, m_ak = sc[..., :C, :C].tril(-1), sc[..., :C, C:].tril(-1)
        m_rb, m_rk = sc[..., C:, :C].tril(), sc[..., C:, C:].tril()
    else:                                                               # exact pairwise differences
        m_ab, m_ak = _pair_scores(a, b, Gp, G, True), _pair_scores(a, k, Gp, G, True)
        m_rb, m_rk = _pair_scores(r, b, G, G, False), _pair_scores(r, k, G, G, False)
    t_inv = unit_lower_inverse(-m_ab)                                   # (B, H, N, C, C)
    w_s = t_inv @ a_p                                                   # (B, H, N, C, K)   X = w_s S0 + u
    u = t_inv @ (m_ak @ v)                                              # (B, H, N, C, V)
    q_eff = r_g + m_rb @ w_s                                            # (B, H, N, C, K)   O = q_eff S0 + o_c
    o_c = m_rb @ u + m_rk @ v                                           # (B, H, N, C, V)
    to_end = (G[..., -1:, :] - G).exp()                                 # (B, H, N, C, K) e^{G_C - G_j}
    b_e, k_e = (b * to_end).transpose(-1, -2), (k * to_end).transpose(-1, -2)   # (B, H, N, K, C)
    trans = b_e @ w_s + torch.diag_embed(G[..., -1, :].exp())           # (B, H, N, K, K)
    inject = b_e @ u + k_e @ v                                          # (B, H, N, K, V)
    starts, S = state_pass(S, trans, inject)                            # (B, H, N, K, V), (B, H, K, V)
    o = q_eff @ starts + o_c                                            # (B, H, N, C, V)
    return from_chunks(o, T).to(out_dtype), (S if output_final_state else None)
