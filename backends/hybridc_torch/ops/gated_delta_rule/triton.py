"""Triton GPU kernels for the chunked gated delta rule (WY / UT-transform form); the delta rule is its g = 0 case
(``delta_rule/triton.py``).

Paper: Yang, Kautz & Hatamizadeh, "Gated Delta Networks" (arXiv:2412.06464), and Yang et al., "Parallelizing Linear
Transformers with the Delta Rule over Sequence Length" (arXiv:2406.06484) for the WY / UT form. Reference design:
flash-linear-attention's ``chunk_gated_delta_rule`` (fla/ops/gated_delta_rule/chunk.py: a per-chunk kernel builds the
UT transform and w, u; a second kernel walks the chunks per (batch, head, V-block) with the state on chip). The math
is ``chunk.chunk_delta_core``'s (read its docstring); ``naive.reference`` is the oracle.

Two kernels, [B, T, H, K] layout as the module, chunk C (64 by default; any size, the tile is BT = next pow2 >= 16):
  1. ``_gdr_prep_kernel``, grid (B*H, chunks): loads the chunk's k [BT, K], beta, g; G = cumsum(g) (log space);
     n = strictly-lower(diag(beta) k k^T * exp(G_i - G_j)) by one tl.dot; A = (I + n)^{-1} by forward substitution on
     the [BT, BT] register tile (row i = e_i - n_i A); w = A (beta k exp(G)) [BT, K]; u = A (beta v), V in BV blocks.
     Writes G, w, u (fp32) to HBM.
  2. ``_gdr_fwd_kernel``, grid (B*H, V-blocks): the state S [K, BV] stays in registers (fp32) while the program walks
     the chunks: v_new = u - w S; o = (scale q exp(G)) S + (scale q k^T * exp(G_i - G_j), causal) v_new;
     S <- exp(G_C) S + (k exp(G_C - G))^T v_new. Only o and the final state are written.
Every product is a tl.dot on tiles >= 16 (fp32 accumulation; IEEE fp32 for fp32 inputs, TF32 for bf16/fp16 inputs,
whose mantissas are shorter anyway); loads upcast to fp32; o is stored in q's dtype, the final state in fp32.
Ragged tails are masked (rows past T load k = v = beta = g = 0, which leave the state unchanged).

Backward: a custom ``torch.autograd.Function`` whose backward recomputes the forward through the torch chunked form
(``chunk_delta_core`` under ``torch.enable_grad``, same chunk size, same device) and returns its gradients; the tests
prove them equal to the reference's. fp64 inputs (and T = 0) run ``chunk_delta_core`` directly.

Bandwidth model (bytes read + written once, Bt = bytes per input element): kernel 1 reads k, v, g, beta
(T H (K + V + 2) Bt per batch) and writes G, w, u in fp32 (4 T H (1 + K + V)); kernel 2 reads q, k once per V-block
and G, w, u (4 T H (1 + K + V)) and writes o (T H V Bt) and S (4 H K V). About (2 K + 2 V) (Bt + 4) bytes per
(token, head): linear in T, no T x T or per-chunk state tensor in HBM.

Dimension glossary:
    B batch, T time, H heads, K key/query head dim, V value head dim, C chunk size, BT/BK/BV tile sizes.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .chunk import chunk_delta_core

__all__ = ["triton_gated_delta_rule"]

MAX_HEAD_DIM = 256  # K is one register tile
# Triton reads TRITON_INTERPRET when a kernel is decorated: then the kernels run on CPU tensors through numpy
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _tile(n: int) -> int:
    """Power-of-two tile >= n and >= 16 (tl.dot's smallest shape on tensor cores)."""
    return max(16, triton.next_power_of_2(n))


@triton.jit
def _unit_lower_inverse(n, rows_used, BT: tl.constexpr):
    """(I + n)^{-1} for a strictly lower [BT, BT] fp32 tile, by forward substitution: A_i = e_i - sum_j n_ij A_j.

    Rows at or past `rows_used` are zero in n, so their rows of the inverse stay e_i and the loop stops there.
    """
    r = tl.arange(0, BT)
    a = (r[:, None] == r[None, :]).to(tl.float32)                           # [BT, BT] identity
    for i in range(1, rows_used):
        n_i = tl.sum(tl.where(r[:, None] == i, n, 0.0), axis=0)             # [BT] row i of n (over j)
        a = tl.where(r[:, None] == i, a - tl.sum(n_i[:, None] * a, axis=0)[None, :], a)
    return a


@triton.jit
def _gdr_prep_kernel(k_ptr, v_ptr, g_ptr, beta_ptr, G_ptr, w_ptr, u_ptr, T, H, K, V, C, NC,
                     BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr):
    """Kernel 1, one program per (batch*head, chunk): G = cumsum(g), A = UT inverse, w = A beta k e^G, u = A beta v."""
    pid_bh, c = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    i = tl.arange(0, BT)
    t = c * C + i                                                           # [BT] global step of chunk row i
    valid = (i < C) & (t < T)
    row = (b * T + t).to(tl.int64) * H + h                                  # [BT] flat (b, t, h)
    prow = (pid_bh * NC + c).to(tl.int64) * C + i                           # [BT] flat (b*h, padded t)
    ck = tl.arange(0, BK)
    mk = ck[None, :] < K
    k = tl.load(k_ptr + row[:, None] * K + ck[None, :], mask=valid[:, None] & mk, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + row, mask=valid, other=0.0).to(tl.float32)   # [BT]
    G = tl.cumsum(tl.load(g_ptr + row, mask=valid, other=0.0).to(tl.float32), 0)   # [BT] inclusive log decay
    tl.store(G_ptr + prow, G, mask=i < C)
    kb = k * beta[:, None]                                                  # [BT, BK]
    lower = i[:, None] > i[None, :]
    n = tl.dot(kb, tl.trans(k), input_precision=PREC)                       # [BT, BT] beta_i k_i.k_j
    n = n * tl.exp(tl.where(lower, G[:, None] - G[None, :], float("-inf")))  # strictly lower, decayed
    a = _unit_lower_inverse(n, tl.minimum(C, T - c * C), BT)
    w = tl.dot(a, kb * tl.exp(G)[:, None], input_precision=PREC)            # [BT, BK]
    tl.store(w_ptr + prow[:, None] * K + ck[None, :], w, mask=(i < C)[:, None] & mk)
    for v0 in range(0, V, BV):
        cv = v0 + tl.arange(0, BV)
        mv = cv[None, :] < V
        vb = tl.load(v_ptr + row[:, None] * V + cv[None, :], mask=valid[:, None] & mv, other=0.0).to(tl.float32)
        u = tl.dot(a, vb * beta[:, None], input_precision=PREC)             # [BT, BV]
        tl.store(u_ptr + prow[:, None] * V + cv[None, :], u, mask=(i < C)[:, None] & mv)


@triton.jit
def _gdr_fwd_kernel(q_ptr, k_ptr, G_ptr, w_ptr, u_ptr, h0_ptr, o_ptr, ht_ptr, scale, T, H, K, V, C, NC,
                    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_H0: tl.constexpr,
                    PREC: tl.constexpr):
    """Kernel 2, one program per (batch*head, V-block): S [BK, BV] in registers, walked over the chunks."""
    pid_bh, pid_v = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    i = tl.arange(0, BT)
    ck = tl.arange(0, BK)
    cv = pid_v * BV + tl.arange(0, BV)
    mk, mv = ck < K, cv < V
    s_off = pid_bh.to(tl.int64) * K * V + ck[:, None] * V + cv[None, :]    # [BK, BV]
    s_mask = mk[:, None] & mv[None, :]
    if HAS_H0:
        S = tl.load(h0_ptr + s_off, mask=s_mask, other=0.0).to(tl.float32)
    else:
        S = tl.zeros([BK, BV], dtype=tl.float32)
    for c in range(NC):
        t = c * C + i
        in_chunk = i < C
        valid = in_chunk & (t < T)
        row = (b * T + t).to(tl.int64) * H + h
        prow = (pid_bh * NC + c).to(tl.int64) * C + i
        qk_mask = valid[:, None] & mk[None, :]
        q = tl.load(q_ptr + row[:, None] * K + ck[None, :], mask=qk_mask, other=0.0).to(tl.float32) * scale
        k = tl.load(k_ptr + row[:, None] * K + ck[None, :], mask=qk_mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + prow[:, None] * K + ck[None, :], mask=in_chunk[:, None] & mk[None, :], other=0.0)
        u = tl.load(u_ptr + prow[:, None] * V + cv[None, :], mask=in_chunk[:, None] & mv[None, :], other=0.0)
        G = tl.load(G_ptr + prow, mask=in_chunk, other=0.0)                 # [BT]
        G_last = tl.load(G_ptr + (pid_bh * NC + c).to(tl.int64) * C + C - 1)
        v_new = u - tl.dot(w, S, input_precision=PREC)                      # [BT, BV] the chunk's delta updates
        causal = (i[:, None] >= i[None, :]) & in_chunk[:, None] & in_chunk[None, :]
        qk = tl.dot(q, tl.trans(k), input_precision=PREC)                   # [BT, BT]
        qk = qk * tl.exp(tl.where(causal, G[:, None] - G[None, :], float("-inf")))
        o = tl.dot(q * tl.exp(G)[:, None], S, input_precision=PREC) + tl.dot(qk, v_new, input_precision=PREC)
        tl.store(o_ptr + row[:, None] * V + cv[None, :], o.to(o_ptr.dtype.element_ty),
                 mask=valid[:, None] & mv[None, :])
        kd = k * tl.exp(G_last - G)[:, None]                                # [BT, BK] exp(G_C - G_j) k_j
        S = S * tl.exp(G_last) + tl.dot(tl.trans(kd), v_new, input_precision=PREC)
    tl.store(ht_ptr + s_off, S, mask=s_mask)


def _forward(q, k, v, g, beta, scale, h0, chunk):
    """Launch both kernels on contiguous [B, T, H, *] inputs; returns (o in q.dtype, final state fp32)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    NC = triton.cdiv(T, chunk)
    BT, BK = _tile(chunk), _tile(K)
    BV = min(_tile(V), 32 if BK >= 128 else 64)  # K 128, BV 64: 306 KiB of shared memory on an H200 (limit 227)
    f32 = dict(device=q.device, dtype=torch.float32)
    G = torch.empty(B, H, NC * chunk, **f32)                                # (B, H, T_pad)
    w = torch.empty(B, H, NC * chunk, K, **f32)                             # (B, H, T_pad, K)
    u = torch.empty(B, H, NC * chunk, V, **f32)                             # (B, H, T_pad, V)
    prec = "ieee" if q.dtype == torch.float32 else "tf32"
    _gdr_prep_kernel[(B * H, NC)](k, v, g, beta, G, w, u, T, H, K, V, chunk, NC, BT=BT, BK=BK, BV=BV, PREC=prec)
    o = torch.empty(B, T, H, V, device=q.device, dtype=q.dtype)             # (B, T, H, V)
    ht = torch.empty(B, H, K, V, **f32)                                     # (B, H, K, V)
    h0_arg = ht if h0 is None else h0
    _gdr_fwd_kernel[(B * H, triton.cdiv(V, BV))](q, k, G, w, u, h0_arg, o, ht, scale, T, H, K, V, chunk, NC,
                                                 BT=BT, BK=BK, BV=BV, HAS_H0=h0 is not None, PREC=prec,
                                                 num_stages=2)
    return o, ht


class _ChunkGatedDeltaRule(torch.autograd.Function):
    """Forward: the Triton kernels. Backward: recomputation through ``chunk_delta_core`` (torch autograd)."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, h0, scale, chunk):
        ctx.save_for_backward(q, k, v, g, beta, h0)
        ctx.scale, ctx.chunk = scale, chunk
        return _forward(q, k, v, g, beta, scale, h0, chunk)

    @staticmethod
    def backward(ctx, do, dht):
        saved = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [None if x is None else x.detach().requires_grad_(need)
                      for x, need in zip(saved, ctx.needs_input_grad)]
            q, k, v, g, beta, h0 = leaves
            o, ht = chunk_delta_core(q, k, v, g, beta, ctx.scale, h0, True, ctx.chunk)
            wrt = [x for x in leaves if x is not None and x.requires_grad]
            grads = iter(torch.autograd.grad((o, ht), wrt, (do, dht), allow_unused=True))
        return (*(next(grads) if x is not None and x.requires_grad else None for x in leaves), None, None)


def triton_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                            chunk_size=64):
    """Gated delta rule by the Triton kernels; same contract as ``naive.reference``.

    q, k (B, T, H, K); v (B, T, H, V); g, beta (B, T, H); initial_state (B, H, K, V) or None.
    Returns (o (B, T, H, V) in q.dtype, final state (B, H, K, V) fp32 or None).
    """
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else float(scale)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if T == 0 or q.dtype == torch.float64:
        return chunk_delta_core(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size)
    if K > MAX_HEAD_DIM:
        raise ValueError(f"triton gated delta rule: key head dim {K} > {MAX_HEAD_DIM}")
    if q.device.type != "cuda" and not _INTERPRETED:
        raise ValueError(f"impl='triton' needs CUDA tensors (got {q.device}; TRITON_INTERPRET=1 runs it on CPU)")
    args = [x.contiguous() for x in (q, k, v, g, beta)]
    h0 = None if initial_state is None else initial_state.contiguous()
    o, ht = _ChunkGatedDeltaRule.apply(*args, h0, scale, int(chunk_size))
    return o, (ht if output_final_state else None)
