"""SSD, the chunked algorithm (``impl="chunk"``, what ``auto`` picks on CPU): Dao & Gu 2024, Sec. 6.

With the log-decays a_t = dt_t A_h and their within-chunk cumulative sums g_t (log space; decays only ever as exp of
differences g_t - g_s <= 0, never divisions by cumulative products), for each chunk of T steps:
    intra   y_t  = sum_{s<=t} (C_t . B_s) exp(g_t - g_s) dt_s x_s          (masked T x T matmuls)
    states  S_c  = sum_s exp(g_T - g_s) dt_s x_s B_s^T                      (P x N per chunk and head)
    passing S_in(c+1) = exp(g_T(c)) S_in(c) + S_c                          (short sequential loop over chunks)
    inter   y_t += exp(g_t) C_t . S_in(c)
fp32 accumulation; torch autograd differentiates it (the T x T intermediates are per chunk, O(L T) memory).

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups of B/C (H % G == 0)    N: state size
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .naive import _acc_dtype, _discretize_dt, _skip

__all__ = ["chunk_ssd"]


def chunk_ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False):
    """Chunked SSD, same contract as `reference`; ``chunk_size`` (T) is honoured. Returns (y, final_states)."""
    batch, length, heads, head_dim = x.shape
    groups, state = B.shape[-2], B.shape[-1]
    acc = _acc_dtype(x.dtype)
    xa = x.to(acc)
    dt = _discretize_dt(dt, dt_bias, dt_softplus)  # (B, L, H)
    S0 = initial_states.to(acc) if initial_states is not None else None  # (B, H, P, N)
    if length == 0:
        y = xa.new_zeros(batch, 0, heads, head_dim)
        final = S0 if S0 is not None else xa.new_zeros(batch, heads, head_dim, state)
        return y.to(x.dtype), final
    T = max(1, min(int(chunk_size), length))
    nc = -(-length // T)
    pad = nc * T - length
    hg = heads // groups  # heads per group
    Bm, Cm = B.to(acc), C.to(acc)
    xdt = xa * dt[..., None]  # (B, L, H, P)
    la = dt * A.to(acc)  # (B, L, H) log-decays (<= 0 for A < 0)
    if pad:  # trailing padding: zero input and zero log-decay leave real outputs and the final state unchanged
        xdt = F.pad(xdt, (0, 0, 0, 0, 0, pad))
        la = F.pad(la, (0, 0, 0, pad))
        Bm = F.pad(Bm, (0, 0, 0, 0, 0, pad))
        Cm = F.pad(Cm, (0, 0, 0, 0, 0, pad))
    # chunked layouts; heads split as (G, hg) so B/C are shared without repeat_interleave
    xdt = xdt.reshape(batch, nc, T, groups, hg, head_dim).permute(0, 1, 3, 4, 2, 5)  # (B, c, G, hg, T, P)
    Bc = Bm.reshape(batch, nc, T, groups, state).transpose(2, 3)  # (B, c, G, T, N)
    Cc = Cm.reshape(batch, nc, T, groups, state).transpose(2, 3)  # (B, c, G, T, N)
    g = la.reshape(batch, nc, T, groups, hg).permute(0, 1, 3, 4, 2).cumsum(-1)  # (B, c, G, hg, T)
    g_last = g[..., -1:]  # (B, c, G, hg, 1)
    # intra-chunk (diagonal blocks): masked decay-weighted "attention"
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    seg = g[..., :, None] - g[..., None, :]  # (B, c, G, hg, T, T): g_t - g_s
    scores = Cc @ Bc.transpose(-1, -2)  # (B, c, G, T, T): C_t . B_s
    if torch.is_grad_enabled() and seg.requires_grad:
        decay = torch.where(causal, seg, torch.full_like(seg, -torch.inf)).exp()
        y = (decay * scores[:, :, :, None]) @ xdt  # (B, c, G, hg, T, P)
    else:  # inference: the same in place, one (B, c, G, hg, T, T) buffer instead of four
        decay = seg.masked_fill_(~causal, -torch.inf).exp_().mul_(scores[:, :, :, None])
        y = decay @ xdt  # (B, c, G, hg, T, P)
    # per-chunk states from a zero start: S_c = sum_s exp(g_T - g_s) xdt_s B_s^T
    w = torch.exp(g_last - g)  # (B, c, G, hg, T)
    states = (xdt * w[..., None]).transpose(-1, -2) @ Bc[:, :, :, None]  # (B, c, G, hg, P, N)
    # inter-chunk state passing (sequential over chunks)
    chunk_decay = torch.exp(g_last[..., 0])  # (B, c, G, hg)
    S = S0.reshape(batch, groups, hg, head_dim, state) if S0 is not None else None
    starts = []
    for c in range(nc):
        starts.append(S)
        S = states[:, c] if S is None else chunk_decay[:, c, ..., None, None] * S + states[:, c]
    if S0 is None:
        starts[0] = torch.zeros_like(states[:, 0])
    S_in = torch.stack(starts, dim=1)  # (B, c, G, hg, P, N)
    # contribution of the entering state: exp(g_t) C_t . S_in
    y = y + torch.exp(g)[..., None] * (Cc[:, :, :, None] @ S_in.transpose(-1, -2))  # (B, c, G, hg, T, P)
    y = y.permute(0, 1, 4, 2, 3, 5).reshape(batch, nc * T, heads, head_dim)[:, :length]  # (B, L, H, P)
    if D is not None:
        y = y + _skip(D, xa)
    if z is not None:
        y = y * F.silu(z.to(acc))
    return y.to(x.dtype), S.reshape(batch, heads, head_dim, state)
