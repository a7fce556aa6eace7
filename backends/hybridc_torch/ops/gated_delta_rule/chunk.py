"""The (gated) delta rule, chunked (``impl="chunk"``; what ``auto`` picks on CPU when the C++ kernels cannot be
built): the WY / UT-transform form of Yang et al. 2024 (arXiv:2406.06484), with the gate's decays folded in as in
Gated DeltaNet (arXiv:2412.06464). ``chunk_delta_core`` serves both ops (g None is the plain delta rule).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim, N chunks, C chunk size.
"""
from __future__ import annotations

import torch

from .._chunk import chunk_grid, chunk_layout, empty_sequence, from_chunks, start_state, state_pass, unit_lower_inverse
from .._naive import acc_dtype

__all__ = ["chunk_delta_core", "chunk_gated_delta_rule"]


def chunk_delta_core(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size):
    """Chunked WY / UT-transform form of the (gated) delta rule; g None means no decay (plain delta rule).

    Inside a chunk of C steps (cumulative log decay G_i = g_1 + ... + g_i, pair decays exp(G_i - G_j), j <= i):
        (I + diag(beta) tril_strict(exp(G_i - G_j) k_i.k_j)) [U_v | W] = [beta v | beta exp(G) k]
    so the delta-rule updates of the chunk are U = U_v - W S0 (S0 the state entering the chunk), and
        O = (scale q exp(G)) S0 + tril(exp(G_i - G_j) scale q_i.k_j) U,
        S_C = exp(G_C) S0 + (k exp(G_C - G))^T U = (exp(G_C) I - kd^T W) S0 + kd^T U_v.
    Everything but the S0 products runs for all chunks at once (dense batched matmuls and a batched unit-triangular
    inverse by block doubling); only the state pass (one (K, K) x (K, V) matmul-add per chunk) is sequential.
    Padded tail steps have k = v = beta = 0 and g = 0, which leave the state unchanged. Autograd differentiates
    through it (measured: faster than fla's naive chunk form; the saved tensors are O(T (C + K + V)) per head plus
    one (K, V) state and one (K, K) transition per chunk).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    out_dtype, acc = q.dtype, acc_dtype(q.dtype)
    scale = K ** -0.5 if scale is None else scale
    S = start_state(q, V, initial_state, acc)                           # (B, H, K, V)
    if T == 0:
        return empty_sequence(q, V, S, output_final_state)
    C, pad, N = chunk_grid(T, chunk_size)
    q, k, v = (chunk_layout(t.to(acc), C, pad) for t in (q, k, v))      # (B, H, N, C, K|V)
    beta = chunk_layout(beta.to(acc), C, pad)[..., None]                # (B, H, N, C, 1)
    kb = k * beta                                                       # (B, H, N, C, K)
    k_t = k.transpose(-1, -2)                                           # (B, H, N, K, C)
    mix = kb @ k_t                                                      # (B, H, N, C, C) beta_i k_i.k_j
    aqk = (q * scale) @ k_t                                             # (B, H, N, C, C) scale q_i.k_j
    if g is None:
        qg, kd, k_rhs = q * scale, k, kb
        aqk = aqk.tril()                                                # lower incl.
        decay_c = torch.ones((), dtype=acc, device=q.device)
    else:
        G = chunk_layout(g.to(acc), C, pad).cumsum(-1)                  # (B, H, N, C) inclusive
        strict_upper = torch.triu(torch.ones(C, C, dtype=torch.bool, device=q.device), 1)
        dec = (G[..., :, None] - G[..., None, :]).masked_fill_(strict_upper, float("-inf")).exp_()  # e^{G_i-G_j}
        mix, aqk = mix * dec, aqk * dec                                 # lower (upper exactly 0)
        eG = G.exp()[..., None]                                         # (B, H, N, C, 1)
        qg, k_rhs = q * (scale * eG), kb * eG                           # (B, H, N, C, K)
        kd = k * (G[..., -1:] - G).exp()[..., None]                     # (B, H, N, C, K) exp(G_C - G_j) k_j
        decay_c = G[..., -1].exp()[..., None, None]                     # (B, H, N, 1, 1)
    t_inv = unit_lower_inverse(mix)                                     # reads the strictly lower part only
    u_v = t_inv @ (v * beta)                                            # (B, H, N, C, V)
    w = t_inv @ k_rhs                                                   # (B, H, N, C, K)
    # S_C = e^{G_C} S0 + kd^T (u_v - w S0) = trans S0 + inject: one (K, K) x (K, V) matmul-add per chunk.
    kd_t = kd.transpose(-1, -2)                                         # (B, H, N, K, C)
    trans = torch.eye(K, dtype=acc, device=q.device) * decay_c - kd_t @ w   # (B, H, N, K, K)
    inject = kd_t @ u_v                                                 # (B, H, N, K, V)
    starts, S = state_pass(S, trans, inject)                            # (B, H, N, K, V), (B, H, K, V)
    # O = qg S0 + aqk (u_v - w S0) = (qg - aqk w) S0 + aqk u_v
    o = (qg - aqk @ w) @ starts + aqk @ u_v                             # (B, H, N, C, V)
    return from_chunks(o, T).to(out_dtype), (S if output_final_state else None)


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                           chunk_size=64):
    """Chunked gated delta rule (WY / UT-transform form, chunk 64 by default); same contract as ``reference``."""
    return chunk_delta_core(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size)
