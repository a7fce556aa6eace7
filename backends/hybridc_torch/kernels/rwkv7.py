"""RWKV-7's generalized delta rule (diagonal-plus-low-rank state transition).

Paper: Peng et al., "RWKV-7 "Goose" with Expressive Dynamic State Evolution" (2025, arXiv:2503.14456).
Reference implementation: flash-linear-attention, ``fla.ops.rwkv7`` (``chunk_rwkv7`` / ``fused_recurrent_rwkv7``
signature, [B, T, H, K] layout, state stored (K, V)) and ``fla/ops/generalized_delta_rule/dplr/naive.py``
(``dplr_recurrence``) for the math.

Per head, with state S (K, V), log decay w_t (K,) and one step t (a^T S uses the state *before* the decay):
    S_t = exp(w_t)[:, None] * S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T      # (K, V)
    o_t = S_t^T (scale * r_t)                                                 # (V,)
(In RWKV's own (V, K) layout this reads S = S diag(exp(w)) + (S a) b^T + v k^T.)  RWKV-7 uses a = -kk, b = kk * a_gate.

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/receptance head dim, V value head dim.
"""
from __future__ import annotations

import torch

from .gated_delta_rule import _chunk_layout, unit_lower_inverse
from ._dispatch import choose

__all__ = ["rwkv7", "rwkv7_step", "reference", "chunk_rwkv7"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: at least fp32 (fp64 inputs stay fp64)."""
    return torch.promote_types(dtype, torch.float32)


def rwkv7_step(r_t, w_t, k_t, v_t, a_t, b_t, state, scale=1.0):
    """One recurrence step. r_t, w_t, k_t, a_t, b_t (B, H, K); v_t (B, H, V); state (B, H, K, V).

    scale None means K**-0.5. Returns (o_t (B, H, V) in r_t's dtype, new state in the accumulation dtype).
    Does not mutate state.
    """
    acc = _acc_dtype(r_t.dtype)
    scale = r_t.shape[-1] ** -0.5 if scale is None else scale
    r, w, k, v, a, b = (t.to(acc) for t in (r_t, w_t, k_t, v_t, a_t, b_t))
    S = state.to(acc)                                                   # (B, H, K, V)
    sa = torch.einsum("bhk,bhkv->bhv", a, S)                            # (B, H, V)
    S = w.exp()[..., None] * S + b[..., :, None] * sa[..., None, :]     # (B, H, K, V)
    S = S + k[..., :, None] * v[..., None, :]                           # (B, H, K, V)
    o = torch.einsum("bhk,bhkv->bhv", r * scale, S)                     # (B, H, V)
    return o.to(r_t.dtype), S


def reference(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False):
    """Sequential oracle: a Python loop over time with fp32 (or wider) state accumulation."""
    B, T, H, K = r.shape
    V = v.shape[-1]
    acc = _acc_dtype(r.dtype)
    if initial_state is None:
        S = torch.zeros(B, H, K, V, dtype=acc, device=r.device)        # (B, H, K, V)
    else:
        S = initial_state.to(acc)                                       # (B, H, K, V)
    outs = []
    for t in range(T):
        o_t, S = rwkv7_step(r[:, t], w[:, t], k[:, t], v[:, t], a[:, t], b[:, t], S, scale)
        outs.append(o_t)                                                # (B, H, V)
    o = torch.stack(outs, dim=1) if T else v.new_zeros(B, 0, H, V)      # (B, T, H, V)
    return o.to(r.dtype), (S if output_final_state else None)


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
    out_dtype, acc = r.dtype, _acc_dtype(r.dtype)
    scale = K ** -0.5 if scale is None else scale
    if initial_state is None:
        S = torch.zeros(B, H, K, V, dtype=acc, device=r.device)        # (B, H, K, V)
    else:
        S = initial_state.to(acc)                                       # (B, H, K, V)
    if T == 0:
        return r.new_zeros(B, 0, H, V), (S if output_final_state else None)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    C = min(int(chunk_size), T)
    pad = (-T) % C
    N = (T + pad) // C
    r, w, k, v, a, b = (_chunk_layout(t.to(acc), C, pad) for t in (r, w, k, v, a, b))   # (B, H, N, C, K|V)
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
    starts = []
    for tr, inj in zip(trans.unbind(2), inject.unbind(2)):              # sequential state pass
        starts.append(S)
        S = torch.baddbmm(inj.reshape(B * H, K, V), tr.reshape(B * H, K, K), S.reshape(B * H, K, V)).view(B, H, K, V)
    o = q_eff @ torch.stack(starts, dim=2) + o_c                        # (B, H, N, C, V)
    o = o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2).contiguous()  # (B, T, H, V), as the reference
    return o.to(out_dtype), (S if output_final_state else None)


_IMPLS = {"reference": reference, "chunk": chunk_rwkv7}


def _auto(device) -> str:
    """The chunked form on every device: it is plain torch (matmuls), and no GPU kernel of our own exists yet."""
    return "chunk"


def _pick(impl: str, x: torch.Tensor):
    return choose("rwkv7", _IMPLS, impl, _auto(x.device))


def rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, *, impl="auto",
          chunk_size=None):
    """RWKV-7 generalized delta rule over a sequence, as fla's ``chunk_rwkv7`` (w = log decay, state (K, V)).

    r, w, k, a, b (B, T, H, K); v (B, T, H, V); scale 1.0 (None means K**-0.5);
    initial_state (B, H, K, V) or None. Returns (o (B, T, H, V), final_state (B, H, K, V) or None).
    impl: "auto" (chunked), "reference" or "chunk"; chunk_size (None = the impl's default) is ignored by the
    reference.
    """
    fn = _pick(impl, r)
    extra = {} if chunk_size is None or fn is reference else {"chunk_size": chunk_size}
    return fn(r, w, k, v, a, b, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              **extra)
