"""Triton GPU kernels for SSD, the chunked scalar-decay state space recurrence of Mamba-2.

Paper: Dao & Gu, "Transformers are SSMs" (ICML 2024), Sec. 6-7 (the SSD chunked algorithm). Reference design:
mamba_ssm's Triton SSD (mamba_ssm/ops/triton/ssd_*.py): a chunk cumsum kernel, a chunk-state kernel, a
state-passing kernel and a chunk-scan (output) kernel; written here from the math of ``chunk.chunk_ssd`` (read its
docstring), whose sequential twin ``naive.reference`` is the oracle.

Four kernels, layouts as the module (x, z (B, L, H, P); dt (B, L, H); B, C (B, L, G, N)), chunk T steps (a parameter;
any size, tiles are powers of two >= 16 with masks), g_t the within-chunk cumsum of dt_t A_h (log space, decays only
as exp(g_t - g_s) <= 1):
  (a) ``_ssd_decay_kernel``, grid (B*H, chunks): dt_t (+ bias, softplus; 0 past L) and g_t = cumsum(dt A) -> fp32.
  (b) ``_ssd_chunk_state_kernel``, grid (B*H, chunks, P-blocks x N-blocks): S_c = sum_s exp(g_T - g_s) dt_s x_s B_s^T
      as tl.dot([BP, BS], [BS, BN]) over s-blocks of the chunk -> fp32 (B, H, chunks, P, N).
  (c) ``_ssd_state_passing_kernel``, grid (B*H, blocks of P*N): walks the chunks sequentially, overwriting S_c in place
      with the state entering chunk c, S_in(c+1) = exp(g_T(c)) S_in(c) + S_c; writes the final state (fp32).
  (d) ``_ssd_chunk_scan_kernel``, grid (B*H, chunks x row blocks, P-blocks): y = exp(g_t) C_t S_in(c) (one tl.dot
      [BM, N] x [N, BP]) plus, over the s-blocks up to the diagonal, ((C B^T) * exp(g_t - g_s), causal) @ (dt x);
      the D skip and silu(z) gating are fused; y is stored in x's dtype.
Tiles live in registers/shared memory; accumulation is fp32 (IEEE fp32 dots for fp32 inputs, TF32 for bf16/fp16,
whose mantissas are shorter anyway). B/C groups: head h reads group h // (H / G).

Backward: a custom ``torch.autograd.Function`` whose backward recomputes the forward through the torch chunked form
(``chunk.chunk_ssd`` under ``torch.enable_grad``, same chunk size, same device) and returns its gradients; the tests
prove them equal to the reference's. fp64 inputs (and L = 0) run ``chunk_ssd`` directly.

Bandwidth model (bytes read + written once per (b, h), Bt bytes per input element, c = L / T chunks): (a) reads dt
and writes 2 fp32 per step; (b) reads x, B and dt, g (L (P + N) Bt + 8 L) and writes 4 c P N; (c) reads and writes
the c P N states (8 c P N); (d) reads x, z, C, B, dt, g and the states (L (2 P + 2 N) Bt + 8 L + 4 c P N) and writes
y (L P Bt). With T = 256 the states are a few percent of the traffic: the kernels are bandwidth-bound on x, z, y.

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups of B/C    N: state size    T: chunk size
    BM, BS, BP, BN: tiles over rows t, columns s, P and N.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .chunk import chunk_ssd

__all__ = ["triton_ssd"]

MAX_STATE = 256  # N is one register tile in the output kernel
# Triton reads TRITON_INTERPRET when a kernel is decorated: then the kernels run on CPU tensors through numpy
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _tile(n: int) -> int:
    """Power-of-two tile >= n and >= 16 (tl.dot's smallest shape on tensor cores)."""
    return max(16, triton.next_power_of_2(n))


@triton.jit
def _softplus(x):
    """torch's softplus (identity above 20); log1p(e) by Goldberg's trick log(u) e / (u - 1), u = 1 + e."""
    e = tl.exp(tl.minimum(x, 20.0))
    u = 1.0 + e
    lp = tl.where(u == 1.0, e, tl.log(u) * (e / tl.where(u == 1.0, 1.0, u - 1.0)))
    return tl.where(x > 20.0, x, lp)


@triton.jit
def _ssd_decay_kernel(dt_ptr, A_ptr, bias_ptr, dtc_ptr, g_ptr, L, H, T, NC,
                      BT: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(a) One program per (batch*head, chunk): dt_t (bias, softplus, 0 past L) and g_t = cumsum_s<=t dt_s A_h."""
    pid_bh, c = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    i = tl.arange(0, BT)
    t = c * T + i
    valid = (i < T) & (t < L)
    dt = tl.load(dt_ptr + (b * L + t).to(tl.int64) * H + h, mask=valid, other=0.0).to(tl.float32)   # [BT]
    if HAS_BIAS:
        dt += tl.load(bias_ptr + h).to(tl.float32)
    if SOFTPLUS:
        dt = _softplus(dt)
    dt = tl.where(valid, dt, 0.0)                                           # padding: no input, no decay
    g = tl.cumsum(dt * tl.load(A_ptr + h).to(tl.float32), 0)
    off = (pid_bh * NC + c).to(tl.int64) * T + i
    tl.store(dtc_ptr + off, dt, mask=i < T)
    tl.store(g_ptr + off, g, mask=i < T)


@triton.jit
def _ssd_chunk_state_kernel(x_ptr, b_ptr, dtc_ptr, g_ptr, st_ptr, L, H, G, P, N, T, NC,
                            BS: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr):
    """(b) One program per (batch*head, chunk, P-block x N-block): S_c = sum_s exp(g_T - g_s) dt_s x_s B_s^T."""
    pid_bh, c, pid_pn = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    nb_n = tl.cdiv(N, BN)
    b, h = pid_bh // H, pid_bh % H
    grp = h // (H // G)
    cp = (pid_pn // nb_n) * BP + tl.arange(0, BP)
    cn = (pid_pn % nb_n) * BN + tl.arange(0, BN)
    off = (pid_bh * NC + c).to(tl.int64) * T
    g_last = tl.load(g_ptr + off + T - 1)
    acc = tl.zeros([BP, BN], dtype=tl.float32)
    for s0 in range(0, T, BS):
        s = s0 + tl.arange(0, BS)
        ts = c * T + s
        valid = (s < T) & (ts < L)
        dt = tl.load(dtc_ptr + off + s, mask=s < T, other=0.0)
        wgt = tl.where(s < T, tl.exp(g_last - tl.load(g_ptr + off + s, mask=s < T, other=0.0)) * dt, 0.0)
        xrow = (b * L + ts).to(tl.int64) * H + h
        x = tl.load(x_ptr + xrow[None, :] * P + cp[:, None], mask=valid[None, :] & (cp[:, None] < P), other=0.0)
        brow = (b * L + ts).to(tl.int64) * G + grp
        bm = tl.load(b_ptr + brow[:, None] * N + cn[None, :], mask=valid[:, None] & (cn[None, :] < N), other=0.0)
        acc += tl.dot(x.to(tl.float32) * wgt[None, :], bm.to(tl.float32), input_precision=PREC)   # [BP, BN]
    st = st_ptr + ((pid_bh * NC + c).to(tl.int64) * P + cp[:, None]) * N + cn[None, :]
    tl.store(st, acc, mask=(cp[:, None] < P) & (cn[None, :] < N))


@triton.jit
def _ssd_state_passing_kernel(st_ptr, g_ptr, h0_ptr, final_ptr, PN, T, NC,
                              BLOCK: tl.constexpr, HAS_H0: tl.constexpr):
    """(c) One program per (batch*head, block of P*N): st[c] <- state entering chunk c; final state out."""
    pid_bh, pid = tl.program_id(0), tl.program_id(1)
    e = pid * BLOCK + tl.arange(0, BLOCK)
    m = e < PN
    base = pid_bh.to(tl.int64) * PN + e
    if HAS_H0:
        S = tl.load(h0_ptr + base, mask=m, other=0.0).to(tl.float32)
    else:
        S = tl.zeros([BLOCK], dtype=tl.float32)
    for c in range(NC):
        ptr = st_ptr + (pid_bh * NC + c).to(tl.int64) * PN + e
        s_c = tl.load(ptr, mask=m, other=0.0)
        tl.store(ptr, S, mask=m)
        S = tl.exp(tl.load(g_ptr + (pid_bh * NC + c).to(tl.int64) * T + T - 1)) * S + s_c
    tl.store(final_ptr + base, S, mask=m)


@triton.jit
def _ssd_chunk_scan_kernel(x_ptr, z_ptr, b_ptr, c_ptr, d_ptr, dtc_ptr, g_ptr, st_ptr, y_ptr,
                           L, H, G, P, N, T, NC, NM,
                           BM: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
                           HAS_D: tl.constexpr, HAS_Z: tl.constexpr, PREC: tl.constexpr):
    """(d) One program per (batch*head, chunk x row block, P-block): y = inter + intra (+ D x) (* silu z)."""
    pid_bh, pid_cm, pb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    c, m = pid_cm // NM, pid_cm % NM
    b, h = pid_bh // H, pid_bh % H
    grp = h // (H // G)
    r = m * BM + tl.arange(0, BM)                                           # rows of the chunk
    t = c * T + r
    valid_r = (r < T) & (t < L)
    cp = pb * BP + tl.arange(0, BP)
    cn = tl.arange(0, BN)
    mp, mn = cp < P, cn < N
    off = (pid_bh * NC + c).to(tl.int64) * T
    g_r = tl.load(g_ptr + off + r, mask=r < T, other=0.0)                   # [BM]
    crow = (b * L + t).to(tl.int64) * G + grp
    cm = tl.load(c_ptr + crow[:, None] * N + cn[None, :], mask=valid_r[:, None] & mn[None, :], other=0.0)
    cm = cm.to(tl.float32)                                                  # [BM, BN]
    s_in = tl.load(st_ptr + ((pid_bh * NC + c).to(tl.int64) * P + cp[None, :]) * N + cn[:, None],
                   mask=mn[:, None] & mp[None, :], other=0.0)               # [BN, BP] state entering chunk c
    acc = tl.dot(cm, s_in, input_precision=PREC) * tl.exp(g_r)[:, None]     # [BM, BP]
    for s0 in range(0, (m + 1) * BM, BM):                                   # s-blocks up to the diagonal
        s = s0 + tl.arange(0, BM)
        ts = c * T + s
        valid_s = (s < T) & (ts < L)
        srow = (b * L + ts).to(tl.int64)
        bm = tl.load(b_ptr + (srow * G + grp)[:, None] * N + cn[None, :], mask=valid_s[:, None] & mn[None, :],
                     other=0.0).to(tl.float32)                              # [BM, BN] (s rows)
        causal = (r[:, None] >= s[None, :]) & (r < T)[:, None] & (s < T)[None, :]
        g_s = tl.load(g_ptr + off + s, mask=s < T, other=0.0)
        cb = tl.dot(cm, tl.trans(bm), input_precision=PREC)                 # [BM, BM] C_t . B_s
        cb = cb * tl.exp(tl.where(causal, g_r[:, None] - g_s[None, :], float("-inf")))
        dt_s = tl.load(dtc_ptr + off + s, mask=s < T, other=0.0)
        xs = tl.load(x_ptr + (srow * H + h)[:, None] * P + cp[None, :], mask=valid_s[:, None] & mp[None, :],
                     other=0.0).to(tl.float32) * dt_s[:, None]              # [BM, BP] dt_s x_s
        acc += tl.dot(cb, xs, input_precision=PREC)
    io = ((b * L + t).to(tl.int64) * H + h)[:, None] * P + cp[None, :]     # [BM, BP] offsets into x, z, y
    io_mask = valid_r[:, None] & mp[None, :]
    if HAS_D:
        x_r = tl.load(x_ptr + io, mask=io_mask, other=0.0).to(tl.float32)
        acc += x_r * tl.load(d_ptr + h * P + cp, mask=mp, other=0.0).to(tl.float32)[None, :]
    if HAS_Z:
        z = tl.load(z_ptr + io, mask=io_mask, other=0.0).to(tl.float32)
        acc = acc * z * tl.sigmoid(z)
    tl.store(y_ptr + io, acc.to(y_ptr.dtype.element_ty), mask=io_mask)


def _forward(x, dt, A, B, C, chunk, D, z, dt_bias, h0, softplus):
    """Launch (a)-(d) on contiguous inputs; returns (y in x.dtype, final state (B, H, P, N) fp32)."""
    batch, L, H, P = x.shape
    G, N = B.shape[-2:]
    NC = triton.cdiv(L, chunk)
    BT, BP, BN = _tile(chunk), min(_tile(P), 64), _tile(N)
    BM = min(BT, 64)
    f32 = dict(device=x.device, dtype=torch.float32)
    dtc, g = torch.empty(batch, H, NC, chunk, **f32), torch.empty(batch, H, NC, chunk, **f32)
    prec = "ieee" if x.dtype == torch.float32 else "tf32"
    _ssd_decay_kernel[(batch * H, NC)](dt, A, dt_bias if dt_bias is not None else A, dtc, g, L, H, chunk, NC,
                                       BT=BT, HAS_BIAS=dt_bias is not None, SOFTPLUS=softplus)
    states = torch.empty(batch, H, NC, P, N, **f32)                         # (B, H, c, P, N)
    BNs = min(BN, 64)
    grid_b = (batch * H, NC, triton.cdiv(P, BP) * triton.cdiv(N, BNs))
    _ssd_chunk_state_kernel[grid_b](x, B, dtc, g, states, L, H, G, P, N, chunk, NC, BS=BM, BP=BP, BN=BNs, PREC=prec)
    final = torch.empty(batch, H, P, N, **f32)                              # (B, H, P, N)
    block = min(1024, triton.next_power_of_2(P * N))
    _ssd_state_passing_kernel[(batch * H, triton.cdiv(P * N, block))](
        states, g, h0 if h0 is not None else final, final, P * N, chunk, NC, BLOCK=block, HAS_H0=h0 is not None)
    y = torch.empty_like(x)                                                 # (B, L, H, P)
    NM = triton.cdiv(chunk, BM)
    D_hp = None if D is None else (D if D.dim() == 2 else D[:, None]).to(torch.float32).expand(H, P).contiguous()
    _ssd_chunk_scan_kernel[(batch * H, NC * NM, triton.cdiv(P, BP))](
        x, z if z is not None else x, B, C, D_hp if D_hp is not None else dtc, dtc, g, states, y,
        L, H, G, P, N, chunk, NC, NM, BM=BM, BP=BP, BN=BN, HAS_D=D is not None, HAS_Z=z is not None, PREC=prec)
    return y, final


class _ChunkSSD(torch.autograd.Function):
    """Forward: the Triton kernels. Backward: recomputation through ``chunk_ssd`` (torch autograd)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, h0, chunk, softplus):
        ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, h0)
        ctx.chunk, ctx.softplus = chunk, softplus
        return _forward(x, dt, A, B, C, chunk, D, z, dt_bias, h0, softplus)

    @staticmethod
    def backward(ctx, dy, dfinal):
        saved = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [None if t is None else t.detach().requires_grad_(need)
                      for t, need in zip(saved, ctx.needs_input_grad)]
            x, dt, A, B, C, D, z, dt_bias, h0 = leaves
            y, final = chunk_ssd(x, dt, A, B, C, ctx.chunk, D, z, dt_bias, h0, ctx.softplus)
            wrt = [t for t in leaves if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad((y, final), wrt, (dy, dfinal), allow_unused=True))
        return (*(next(grads) if t is not None and t.requires_grad else None for t in leaves), None, None)


def triton_ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False):
    """SSD by the Triton kernels; same contract as ``naive.reference``. Returns (y (B, L, H, P), final (B, H, P, N)).

    x (B, L, H, P); dt (B, L, H); A (H,); B, C (B, L, G, N); D (H,) or (H, P); z (B, L, H, P); dt_bias (H,);
    initial_states (B, H, P, N).
    """
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if x.shape[1] == 0 or x.dtype == torch.float64:
        return chunk_ssd(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, dt_softplus)
    if B.shape[-1] > MAX_STATE:
        raise ValueError(f"triton ssd: state size {B.shape[-1]} > {MAX_STATE}")
    if x.device.type != "cuda" and not _INTERPRETED:
        raise ValueError(f"impl='triton' needs CUDA tensors (got {x.device}; TRITON_INTERPRET=1 runs it on CPU)")
    args = [None if t is None else t.contiguous() for t in (x, dt, A, B, C, D, z, dt_bias, initial_states)]
    return _ChunkSSD.apply(*args, int(chunk_size), bool(dt_softplus))
