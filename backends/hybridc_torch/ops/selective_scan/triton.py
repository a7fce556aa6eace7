"""Triton GPU kernels for the selective scan (Mamba-1's S6 recurrence), forward and backward.

Paper: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023), Sec. 3.3 (the
hardware-aware scan: the state lives in fast memory, only inputs and outputs touch HBM, the backward recomputes).
Reference design: mamba_ssm's CUDA ``selective_scan_fwd/bwd`` kernels, in words: one thread block per (batch,
channel) keeps the [N] states in registers, walks L in chunks, scans each chunk in parallel over time (per thread,
then across the block) with the associative operator on (decay, input) pairs, carries the state from chunk to
chunk and writes only the chunk-boundary states; the backward walks the chunks in reverse, recomputes each
chunk's states and runs a reverse block scan for the state cotangent. Semantics: ``naive.reference``.

Grid and tiling. Program (b * G + g, channel block) owns BLOCK_D channels of group g of batch b and an fp32
state h [BLOCK_D, BLOCK_N] in registers (BLOCK_N = N rounded up to a power of two, masked). Time is walked in
chunks of CHUNK steps. Per chunk it loads coalesced [BLOCK_D, CHUNK] tiles of u, delta, z (L is the contiguous
dimension) and [BLOCK_N, CHUNK] tiles of B and C, forms the pairs (a, b) = (exp(dt A), dt B u) as
[BLOCK_D, BLOCK_N, CHUNK] register tensors, folds the carried state into the first step (b_0 += a_0 h) and runs
``tl.associative_scan`` over the chunk axis with (a1, b1), (a2, b2) -> (a1 a2, a2 b1 + b2). Why a scan, not a
step loop with scalar-offset loads: the tile loads are coalesced and issued once per chunk (a step loop issues
one strided, latency-bound load per step and channel), and the CHUNK steps run in parallel across the lanes, as
in the CUDA reference; the [BLOCK_D, BLOCK_N, CHUNK] tensors stay in registers (the tile budget below). Fused:
delta_bias, softplus, the D skip and the silu(z) gate. Outputs are written in u's dtype, the last state in fp32,
and (for the backward) the state entering every chunk to a checkpoint buffer (B, D, n_chunks, N) fp32.

Backward (a kernel; ``_SelectiveScanTriton`` wires it into autograd). Same grid; chunks in reverse. Per chunk:
recompute the chunk's states from its checkpoint (the forward scan), then the state cotangent
g_t = C_t dy_t + a_{t+1} g_{t+1} (dy = dout * silu(z)) as a second forward ``associative_scan`` over tiles
loaded in reversed time order (``reverse=True`` scans are avoided: non-commutative reverse scans have been
wrong on GPUs, triton-lang/triton#4362); one ``tl.gather`` puts g back in time order. a_{t+1} comes from a tile
of delta loaded one step ahead (masked to a = 1 past L, where the carry starts as d last_state). With
a_t h_{t-1} = h_t - dt_t B_t u_t (no shift, no division):
    ddt_t = sum_n g (A a h_{t-1} + B_t u_t)   ddelta = ddt * sigmoid(delta + bias) (softplus) or ddt
    du_t  = dt_t sum_n g B_t + D dy_t         dA = sum_{b,t} g dt a h_{t-1}      dD = sum_{b,t} dy u
    dB_t  = sum_d g dt u                      dC_t = sum_d h_t dy_t               dz = dout (y + D u) silu'(z)
    d initial_state = a_0 g_0                 ddelta_bias = sum_{b,t} ddelta (a torch sum)
Reductions: dA and dD as per-batch partials summed by torch; dB and dC as per-channel-block partials
(B, G, n_dblocks, N, L) fp32 summed by torch (no atomics: deterministic, at the cost of the partial traffic).

Bandwidth model (bytes read + written once; e = bytes per input element, nd = D / (G BLOCK_D) channel blocks):
    forward  e (3 B D L + 2 B G N L nd) reads (B and C once per channel block, mostly L2 hits) + e B D L out
             + 4 B D N (L / CHUNK + 1) checkpoints and last state.
    backward e (4 B D L + 2 B G N L nd) reads (u, delta, z, dout; shifted/reversed re-reads hit L1/L2)
             + 4 B D N L / CHUNK checkpoints + 3 e B D L grads + 8 B G N L nd dB/dC partials (+ their sum).

Config: CHUNK 16 (also the checkpoint interval), BLOCK_D filling TILE_BUDGET (16 for N = 16), 8 warps. Compiled
for sm_90 with ptxas (no GPU was at hand to run it): forward 117 and backward 229 registers a thread, no spills.

Runs on CUDA tensors; on CPU only through Triton's interpreter (TRITON_INTERPRET=1, as the tests do).
fp64 inputs are not handled here (the entry point's reference is the fp64 path).

Glossary of dimension letters:
    B: batch    D: channels    L: sequence length    N: state size    G: groups of B/C (D % G == 0)
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .naive import reference

__all__ = ["triton_selective_scan"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"  # read at decoration time, as triton.jit does
TILE_BUDGET = 4096  # fp32 elements of one [BLOCK_D, BLOCK_N, CHUNK] register tensor (8 warps: 16 per thread)


# ------------------------------------------------------------------------------------------ device helpers
@triton.jit
def _affine_combine(a1, b1, a2, b2):
    """Compose the maps h -> a1 h + b1 (earlier) then h -> a2 h + b2 (later)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    """log(1 + exp(x)) with torch's threshold 20; log1p by Kahan's trick (exact for tiny exp(x))."""
    y = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + y
    log1p = tl.where(w == 1.0, y, tl.log(w) * (y / (w - 1.0)))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _load_tile(ptr, rows, row_mask, t, L):
    """[R, T] fp32 tile ptr[rows[r] + t[j]] (rows already scaled by the row stride); zeros outside."""
    mask = row_mask[:, None] & ((t >= 0) & (t < L))[None, :]
    return tl.load(ptr + rows[:, None] + t[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _dt_tile(delta_ptr, rows, dmask, bias, t, L, SOFTPLUS: tl.constexpr):
    """(dt, delta + bias) [BLOCK_D, T]; dt = 0 outside the sequence (a = exp(0) = 1 there: padding steps are no-ops)."""
    x = _load_tile(delta_ptr, rows, dmask, t, L) + bias[:, None]
    dt = _softplus(x) if SOFTPLUS else x
    valid = dmask[:, None] & ((t >= 0) & (t < L))[None, :]
    return tl.where(valid, dt, 0.0), x


@triton.jit
def _column(x, j, col):
    """x[:, :, col] of a [R, S, CHUNK] tensor, as a masked reduction (registers cannot be indexed at runtime)."""
    return tl.sum(tl.where((j == col)[None, None, :], x, 0.0), axis=2)


@triton.jit
def _chunk_states(A, dt, u, Bt, h_in, j):
    """States of one chunk from the entering state h_in [BD, BN]: returns (dt B u, h) [BD, BN, CHUNK]."""
    a = tl.exp(dt[:, None, :] * A[:, :, None])  # [BD, BN, CHUNK]
    bu = (dt * u)[:, None, :] * Bt[None, :, :]  # [BD, BN, CHUNK]
    first = (j == 0)[None, None, :]
    _, h = tl.associative_scan((a, tl.where(first, bu + a * h_in[:, :, None], bu)), 2, _affine_combine)
    return bu, h


@triton.jit
def _gate(y, z):
    """y * silu(z)."""
    return y * z * tl.sigmoid(z)


@triton.jit
def _store_tile(ptr, rows, t, value, mask):
    """ptr[rows[r] + t[j]] = value[r, j] in the pointer's dtype, where mask."""
    tl.store(ptr + rows[:, None] + t[None, :], value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _program_rows(DIM, L, N, G, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's channels and row offsets: (d, dmask, n, nmask, rows of (B, D, L), rows of (B, G, N, L), b, g)."""
    pid_bg = tl.program_id(0).to(tl.int64)
    b, g = pid_bg // G, pid_bg % G
    dg = DIM // G
    d_local = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d_local < dg
    d = g * dg + d_local
    n = tl.arange(0, BLOCK_N)
    nmask = n < N
    rows_d = (b * DIM + d) * L
    rows_n = ((b * G + g) * N + n) * L
    return d, dmask, n, nmask, rows_d, rows_n, b, g


@triton.jit
def _load_params(A_ptr, D_ptr, bias_ptr, d, dmask, n, nmask, N, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr):
    """A [BD, BN], D [BD], delta_bias [BD] in fp32 (zeros where absent or masked)."""
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dmask[:, None] & nmask[None, :], other=0.0)
    Dv = tl.load(D_ptr + d, mask=dmask, other=0.0) if HAS_D else tl.zeros_like(d).to(tl.float32)
    bias = tl.load(bias_ptr + d, mask=dmask, other=0.0) if HAS_BIAS else tl.zeros_like(d).to(tl.float32)
    return A.to(tl.float32), Dv.to(tl.float32), bias.to(tl.float32)


# ------------------------------------------------------------------------------------------------ forward
@triton.jit
def _ss_fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
                   out_ptr, last_ptr, ckpt_ptr, DIM, L, N, G, n_chunks,
                   HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
                   SOFTPLUS: tl.constexpr, SAVE_CKPT: tl.constexpr,
                   BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr):
    d, dmask, n, nmask, rows_d, rows_n, b, g = _program_rows(DIM, L, N, G, BLOCK_D, BLOCK_N)
    A, Dv, bias = _load_params(A_ptr, D_ptr, bias_ptr, d, dmask, n, nmask, N, HAS_D, HAS_BIAS)
    smask = dmask[:, None] & nmask[None, :]
    state_off = (b * DIM + d)[:, None] * N + n[None, :]  # (B, D, N) offsets
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    if HAS_H0:
        h = tl.load(h0_ptr + state_off, mask=smask, other=0.0).to(tl.float32)
    j = tl.arange(0, CHUNK)
    for c in range(0, n_chunks):
        t = c * CHUNK + j
        if SAVE_CKPT:  # the state entering chunk c, (B, D, n_chunks, N)
            ckpt_off = ((b * DIM + d)[:, None] * n_chunks + c) * N + n[None, :]
            tl.store(ckpt_ptr + ckpt_off, h, mask=smask)
        u = _load_tile(u_ptr, rows_d, dmask, t, L)
        dt, _ = _dt_tile(delta_ptr, rows_d, dmask, bias, t, L, SOFTPLUS)
        Bt = _load_tile(B_ptr, rows_n, nmask, t, L)
        Ct = _load_tile(C_ptr, rows_n, nmask, t, L)
        _, hs = _chunk_states(A, dt, u, Bt, h, j)
        y = tl.sum(hs * Ct[None, :, :], axis=1) + Dv[:, None] * u  # [BD, CHUNK]
        if HAS_Z:
            y = _gate(y, _load_tile(z_ptr, rows_d, dmask, t, L))
        _store_tile(out_ptr, rows_d, t, y, dmask[:, None] & (t < L)[None, :])
        h = _column(hs, j, CHUNK - 1)  # padding steps are no-ops: the last column is the state after step L-1
    tl.store(last_ptr + state_off, h, mask=smask)


# ----------------------------------------------------------------------------------------------- backward
@triton.jit
def _state_cotangent(delta_ptr, dout_ptr, z_ptr, C_ptr, A, bias, rows_d, rows_n, dmask, nmask, t0, L, carry, j,
                     HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, CHUNK: tl.constexpr):
    """g_t = C_t dy_t + a_{t+1} g_{t+1} over the chunk [t0, t0 + CHUNK), in time order, and g_{t0} (the new carry).

    Scanned forward over tiles loaded in reversed time order (k = t0 + CHUNK - 1 - t); `carry` is g_{t0 + CHUNK}.
    """
    tr = t0 + CHUNK - 1 - j  # reversed time index of each lane
    dt_next, _ = _dt_tile(delta_ptr, rows_d, dmask, bias, tr + 1, L, SOFTPLUS)  # 0 past L: a = 1
    alpha = tl.exp(dt_next[:, None, :] * A[:, :, None])  # a_{t+1} [BD, BN, CHUNK]
    dy = _load_tile(dout_ptr, rows_d, dmask, tr, L)
    if HAS_Z:
        dy = _gate(dy, _load_tile(z_ptr, rows_d, dmask, tr, L))
    beta = _load_tile(C_ptr, rows_n, nmask, tr, L)[None, :, :] * dy[:, None, :]  # [BD, BN, CHUNK]
    beta = tl.where((j == 0)[None, None, :], beta + alpha * carry[:, :, None], beta)
    _, g_rev = tl.associative_scan((alpha, beta), 2, _affine_combine)
    back = tl.broadcast_to((CHUNK - 1 - j)[None, None, :], g_rev.shape)
    return tl.gather(g_rev, back, 2), _column(g_rev, j, CHUNK - 1)


@triton.jit
def _gate_grad(dout_ptr, z_ptr, dz_ptr, rows_d, dmask, t, L, ydu, omask, HAS_Z: tl.constexpr):
    """The cotangent of the ungated output y + D u (dout silu(z)); stores dz = dout (y + D u) silu'(z)."""
    dout = _load_tile(dout_ptr, rows_d, dmask, t, L)
    if HAS_Z:  # one return after the constexpr branch: Triton 3.6 compiles the code after an early return too
        z = _load_tile(z_ptr, rows_d, dmask, t, L)
        sz = tl.sigmoid(z)
        _store_tile(dz_ptr, rows_d, t, dout * ydu * sz * (1.0 + z * (1.0 - sz)), omask)
        dy = dout * z * sz
    else:
        dy = dout
    return dy


@triton.jit
def _ss_bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr, dout_ptr, dlast_ptr,
                   du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dh0_ptr, DIM, L, N, G,
                   n_chunks,
                   HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DLAST: tl.constexpr,
                   SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr):
    d, dmask, n, nmask, rows_d, rows_n, b, g = _program_rows(DIM, L, N, G, BLOCK_D, BLOCK_N)
    A, Dv, bias = _load_params(A_ptr, D_ptr, bias_ptr, d, dmask, n, nmask, N, HAS_D, HAS_BIAS)
    smask = dmask[:, None] & nmask[None, :]
    state_off = (b * DIM + d)[:, None] * N + n[None, :]
    carry = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # g at the first step of the later chunk
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + state_off, mask=smask, other=0.0).to(tl.float32)
    dA = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dD = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    # dB / dC partials (B, G, n_dblocks, N, L): this program's rows
    rows_p = (((b * G + g) * tl.num_programs(1) + tl.program_id(1)) * N + n) * L
    j = tl.arange(0, CHUNK)
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        t = c * CHUNK + j
        g_t, carry = _state_cotangent(delta_ptr, dout_ptr, z_ptr, C_ptr, A, bias, rows_d, rows_n, dmask, nmask,
                                      c * CHUNK, L, carry, j, HAS_Z, SOFTPLUS, CHUNK)
        h_in = tl.load(ckpt_ptr + ((b * DIM + d)[:, None] * n_chunks + c) * N + n[None, :], mask=smask, other=0.0)
        u = _load_tile(u_ptr, rows_d, dmask, t, L)
        dt, x = _dt_tile(delta_ptr, rows_d, dmask, bias, t, L, SOFTPLUS)
        Bt = _load_tile(B_ptr, rows_n, nmask, t, L)
        Ct = _load_tile(C_ptr, rows_n, nmask, t, L)
        bu, hs = _chunk_states(A, dt, u, Bt, h_in, j)
        omask = dmask[:, None] & (t < L)[None, :]
        ydu = tl.sum(hs * Ct[None, :, :], axis=1) + Dv[:, None] * u  # the ungated output [BD, CHUNK]
        dy = _gate_grad(dout_ptr, z_ptr, dz_ptr, rows_d, dmask, t, L, ydu, omask, HAS_Z)
        s = g_t * (hs - bu)  # g_t a_t h_{t-1}
        gB = tl.sum(g_t * Bt[None, :, :], axis=1)  # [BD, CHUNK]
        ddt = tl.sum(s * A[:, :, None], axis=1) + gB * u
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(x)
        ddt = tl.where(omask, ddt, 0.0)  # past L, g (the carried d last_state) and h are not zero
        dA += tl.sum(s * dt[:, None, :], axis=2)
        dD += tl.sum(dy * u, axis=1)
        dbias += tl.sum(ddt, axis=1)
        _store_tile(du_ptr, rows_d, t, gB * dt + Dv[:, None] * dy, omask)
        _store_tile(ddelta_ptr, rows_d, t, ddt, omask)
        pmask = nmask[:, None] & (t < L)[None, :]
        _store_tile(dB_ptr, rows_p, t, tl.sum(g_t * (dt * u)[:, None, :], axis=0), pmask)
        _store_tile(dC_ptr, rows_p, t, tl.sum(hs * dy[:, None, :], axis=0), pmask)
    dt0, _ = _dt_tile(delta_ptr, rows_d, dmask, bias, j, L, SOFTPLUS)  # d initial_state = a_0 g_0
    dh0 = tl.exp(tl.sum(tl.where((j == 0)[None, :], dt0, 0.0), axis=1)[:, None] * A) * carry
    tl.store(dh0_ptr + state_off, dh0, mask=smask)
    tl.store(dA_ptr + state_off, dA, mask=smask)
    tl.store(dD_ptr + b * DIM + d, dD, mask=dmask)
    tl.store(dbias_ptr + b * DIM + d, dbias, mask=dmask)


# ------------------------------------------------------------------------------------------------- launch
def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _blocks(state: int, channels_per_group: int, chunk: int, block_d: int | None) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_N): BLOCK_D fills the register tile budget ([BLOCK_D, BLOCK_N, CHUNK] <= TILE_BUDGET)."""
    block_n = _pow2(state)
    if block_d is None:
        block_d = max(1, min(_pow2(channels_per_group), TILE_BUDGET // (block_n * chunk)))
    return _pow2(block_d), block_n


def _forward(u, delta, A, Bm, Cm, Dv, z, bias, h0, softplus, save, cfg):
    """Launch the forward kernel. Returns (out (B, D, L) u.dtype, last (B, D, N) fp32, ckpt (B, D, nc, N) or None)."""
    batch, dim, length = u.shape
    groups, state = Bm.shape[1], Bm.shape[2]
    chunk, block_d = cfg
    block_d, block_n = _blocks(state, dim // groups, chunk, block_d)
    n_chunks = triton.cdiv(length, chunk)
    out = torch.empty_like(u)
    last = u.new_empty(batch, dim, state, dtype=torch.float32)
    ckpt = u.new_empty(batch, dim, n_chunks, state, dtype=torch.float32) if save else None
    grid = (batch * groups, triton.cdiv(dim // groups, block_d))
    _ss_fwd_kernel[grid](u, delta, A, Bm, Cm, Dv, z, bias, h0, out, last, ckpt, dim, length, state, groups, n_chunks,
                         HAS_D=Dv is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None,
                         HAS_H0=h0 is not None, SOFTPLUS=softplus, SAVE_CKPT=save,
                         BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=chunk, num_warps=8)
    return out, last, ckpt


def _backward(saved, dout, dlast, softplus, cfg):
    """Launch the backward kernel and reduce its partials. Returns fp32/input-dtype grads in input order."""
    u, delta, A, Bm, Cm, Dv, z, bias, ckpt = saved
    batch, dim, length = u.shape
    groups, state = Bm.shape[1], Bm.shape[2]
    chunk, block_d = cfg
    block_d, block_n = _blocks(state, dim // groups, chunk, block_d)
    n_dblocks = triton.cdiv(dim // groups, block_d)
    f32 = dict(device=u.device, dtype=torch.float32)
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    dA, dh0 = torch.empty(batch, dim, state, **f32), torch.empty(batch, dim, state, **f32)
    dB, dC = (torch.empty(batch, groups, n_dblocks, state, length, **f32) for _ in range(2))
    dD, dbias = torch.empty(batch, dim, **f32), torch.empty(batch, dim, **f32)
    _ss_bwd_kernel[(batch * groups, n_dblocks)](
        u, delta, A, Bm, Cm, Dv, z, bias, ckpt, dout, dlast, du, ddelta, dz, dA, dB, dC, dD, dbias, dh0,
        dim, length, state, groups, ckpt.shape[2],
        HAS_D=Dv is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, HAS_DLAST=dlast is not None,
        SOFTPLUS=softplus, BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=chunk, num_warps=8)
    return (du, ddelta, dA.sum(0), dB.sum(2), dC.sum(2), dD.sum(0) if Dv is not None else None, dz,
            dbias.sum(0) if bias is not None else None, dh0)


class _SelectiveScanTriton(torch.autograd.Function):
    """(u, delta, A, B, C, D, z, delta_bias, h0) -> (out, last_state); B, C (B, G, N, L); all contiguous."""

    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm, Dv, z, bias, h0, softplus, cfg):
        save = any(ctx.needs_input_grad[:9])
        out, last, ckpt = _forward(u, delta, A, Bm, Cm, Dv, z, bias, h0, softplus, save, cfg)
        if save:
            ctx.save_for_backward(u, delta, A, Bm, Cm, Dv, z, bias, ckpt)
            ctx.softplus, ctx.cfg = softplus, cfg
            ctx.dtypes = [None if t is None else t.dtype for t in (u, delta, A, Bm, Cm, Dv, z, bias, h0)]
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        dout = torch.zeros_like(ctx.saved_tensors[0]) if dout is None else dout.contiguous()
        dlast = None if dlast is None else dlast.contiguous()
        grads = _backward(ctx.saved_tensors, dout, dlast, ctx.softplus, ctx.cfg)
        grads = [None if (gr is None or not need) else gr.to(dt)
                 for gr, need, dt in zip(grads, ctx.needs_input_grad, ctx.dtypes)]
        return (*grads, None, None)


def _check_device(u: torch.Tensor) -> None:
    if u.device.type != "cuda" and not _INTERPRET:
        raise RuntimeError("the Triton selective scan needs CUDA tensors (on CPU: set TRITON_INTERPRET=1 before "
                           "importing it, as the tests do)")


def triton_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          initial_state=None, *, chunk_size: int = 16, block_d: int | None = None):
    """Same contract as `naive.reference`: returns (out (B, D, L) in u.dtype, last_state (B, D, N) fp32).

    u, delta, z (B, D, L); A (D, N); B, C (B, N, L) or (B, G, N, L); D, delta_bias (D,); initial_state (B, D, N).
    ``chunk_size`` (a power of two) is the time tile and checkpoint interval; ``block_d`` the channels per program
    (None: fill the register budget). fp64 inputs and empty tensors go to the reference.
    """
    if u.dtype == torch.float64 or u.numel() == 0 or A.numel() == 0:
        return reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    _check_device(u)
    if chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two, got {chunk_size}")
    groups = 1 if B.dim() == 3 else B.shape[1]
    if u.shape[1] % groups:
        raise ValueError(f"channels ({u.shape[1]}) must be a multiple of the groups of B/C ({groups})")
    c = lambda t: None if t is None else t.contiguous()  # noqa: E731
    bc = lambda M: (M.unsqueeze(1) if M.dim() == 3 else M).contiguous()  # noqa: E731  (B, G, N, L)
    return _SelectiveScanTriton.apply(c(u), c(delta), c(A), bc(B), bc(C), c(D), c(z), c(delta_bias),
                                      c(initial_state), bool(delta_softplus), (int(chunk_size), block_d))
