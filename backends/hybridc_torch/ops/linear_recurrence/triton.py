"""Triton GPU kernels for the diagonal linear recurrence h_t = a_t * h_{t-1} + x_t (Griffin's RG-LRU scan).

Paper: De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models"
(2024), Sec. 2.4 and 4.2 (the scan is memory bound: one pass, the state kept on chip). Reference design:
recurrentgemma's Pallas linear scan for TPU and flash-linear-attention's fused recurrent HGRN kernel, in words:
a program owns a block of channels of one sequence, keeps h in registers in fp32 and walks time, reading a and x
and writing h once; the backward walks time in reverse with the same recurrence on the cotangent.
Semantics: ``naive.reference``.

Grid and tiling. Program (b, channel block) owns BLOCK_D contiguous channels of batch b (D is the contiguous
dimension of (B, L, D): every load and store is a coalesced row of BLOCK_D values) and walks time in chunks of
CHUNK steps: one [CHUNK, BLOCK_D] tile of a and of x per chunk, the carried state folded into the first step
(x_0 += a_0 h), ``tl.associative_scan`` over the chunk axis with (a1, x1), (a2, x2) -> (a1 a2, a2 x1 + x2), one
tile store of h, and the carry is the chunk's last row. The scan (rather than CHUNK dependent steps of one row
each) issues a chunk's loads together and runs its steps in parallel across warps; the tiles stay in registers.
h is written in x's dtype, h_last in fp32; when a gradient is needed and x is not fp32 the forward also writes
an fp32 copy of h for the backward.

Backward (a kernel; ``_LinearRecurrenceTriton`` wires it into autograd): g_t = dh_t + a_{t+1} g_{t+1} (the
carry into the last step is d h_last), dx_t = g_t, da_t = g_t h_{t-1} (h_{-1} = initial_state),
d initial_state = a_0 g_0. Chunks are walked in reverse over tiles loaded in reversed time order, so the
reverse recurrence is again a forward ``associative_scan`` (``reverse=True`` scans are avoided: non-commutative
reverse scans have been wrong on GPUs, triton-lang/triton#4362); a_{t+1} and h_{t-1} are tiles loaded one step
ahead and one step behind (L1/L2 hits); dx and da are stored at the reversed offsets directly.

Bandwidth model (bytes read + written once; e = bytes per element of a, x, h; B L D elements each):
    forward  2 e B L D reads + e B L D writes (+ 4 B L D for the fp32 copy of h when x is bf16 and grads are needed)
    backward 3 B L D reads of a, dh, h (e or 4 bytes) + 2 e B L D writes of da, dx.

Config: CHUNK 16, BLOCK_D 64 (a 128-byte row of bf16), 4 warps. Compiled for sm_90 with ptxas (no GPU was at
hand to run it): forward 72 and backward 95 registers a thread, no spills.

Runs on CUDA tensors; on CPU only through Triton's interpreter (TRITON_INTERPRET=1, as the tests do).
fp64 inputs are not handled here (the entry point's reference is the fp64 path).

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .naive import reference

__all__ = ["triton_linear_recurrence"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"  # read at decoration time, as triton.jit does


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    """Compose the maps h -> a1 h + b1 (earlier) then h -> a2 h + b2 (later)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _row(x, j, row):
    """x[row, :] of a [CHUNK, BLOCK_D] tile, as a masked reduction (registers cannot be indexed at runtime)."""
    return tl.sum(tl.where((j == row)[:, None], x, 0.0), axis=0)


@triton.jit
def _tile(ptr, base, t, d, L, DIM, other):
    """fp32 [CHUNK, BLOCK_D] tile ptr[base + t * DIM + d]; `other` outside 0 <= t < L or d >= DIM."""
    mask = ((t >= 0) & (t < L))[:, None] & (d < DIM)[None, :]
    offs = base + t.to(tl.int64)[:, None] * DIM + d[None, :]
    return tl.load(ptr + offs, mask=mask, other=other).to(tl.float32)


@triton.jit
def _lr_fwd_kernel(a_ptr, x_ptr, h0_ptr, out_ptr, h32_ptr, last_ptr, L, DIM, n_chunks,
                   HAS_H0: tl.constexpr, SAVE_H32: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < DIM
    base = b * L * DIM
    h = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_H0:
        h = tl.load(h0_ptr + b * DIM + d, mask=dmask, other=0.0).to(tl.float32)
    j = tl.arange(0, CHUNK)
    for c in range(0, n_chunks):
        t = c * CHUNK + j
        a = _tile(a_ptr, base, t, d, L, DIM, 1.0)  # a = 1, x = 0 past L: padding steps are no-ops
        x = _tile(x_ptr, base, t, d, L, DIM, 0.0)
        x = tl.where((j == 0)[:, None], x + a * h[None, :], x)
        _, hs = tl.associative_scan((a, x), 0, _affine_combine)  # [CHUNK, BLOCK_D]
        offs = base + t.to(tl.int64)[:, None] * DIM + d[None, :]
        mask = (t < L)[:, None] & dmask[None, :]
        tl.store(out_ptr + offs, hs.to(out_ptr.dtype.element_ty), mask=mask)
        if SAVE_H32:
            tl.store(h32_ptr + offs, hs, mask=mask)
        h = _row(hs, j, CHUNK - 1)
    tl.store(last_ptr + b * DIM + d, h, mask=dmask)


@triton.jit
def _lr_bwd_kernel(a_ptr, h_ptr, h0_ptr, dh_ptr, dlast_ptr, da_ptr, dx_ptr, dh0_ptr, L, DIM, n_chunks,
                   HAS_H0: tl.constexpr, HAS_DLAST: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < DIM
    base = b * L * DIM
    carry = tl.zeros((BLOCK_D,), dtype=tl.float32)  # g at the first step of the later chunk (d h_last at t = L)
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + b * DIM + d, mask=dmask, other=0.0).to(tl.float32)
    h0 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_H0:
        h0 = tl.load(h0_ptr + b * DIM + d, mask=dmask, other=0.0).to(tl.float32)
    j = tl.arange(0, CHUNK)
    for i in range(0, n_chunks):
        tr = (n_chunks - 1 - i) * CHUNK + CHUNK - 1 - j  # row k holds time t0 + CHUNK - 1 - k
        alpha = _tile(a_ptr, base, tr + 1, d, L, DIM, 1.0)  # a_{t+1}; 1 at t + 1 = L
        beta = _tile(dh_ptr, base, tr, d, L, DIM, 0.0)
        beta = tl.where((j == 0)[:, None], beta + alpha * carry[None, :], beta)
        _, g = tl.associative_scan((alpha, beta), 0, _affine_combine)  # g_t in reversed time order
        h_prev = _tile(h_ptr, base, tr - 1, d, L, DIM, 0.0)
        h_prev = tl.where((tr == 0)[:, None], h0[None, :], h_prev)
        offs = base + tr.to(tl.int64)[:, None] * DIM + d[None, :]
        mask = (tr < L)[:, None] & dmask[None, :]
        tl.store(dx_ptr + offs, g.to(dx_ptr.dtype.element_ty), mask=mask)
        tl.store(da_ptr + offs, (g * h_prev).to(da_ptr.dtype.element_ty), mask=mask)
        carry = _row(g, j, CHUNK - 1)  # g at t0
    if HAS_H0:
        a0 = tl.load(a_ptr + base + d, mask=dmask, other=0.0).to(tl.float32)
        tl.store(dh0_ptr + b * DIM + d, (a0 * carry).to(dh0_ptr.dtype.element_ty), mask=dmask)


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class _LinearRecurrenceTriton(torch.autograd.Function):
    """(a, x, h0) -> (h in x.dtype, h_last fp32); a, x (B, L, D), h0 (B, D) contiguous."""

    @staticmethod
    def forward(ctx, a, x, h0, cfg):
        batch, length, dim = x.shape
        chunk, block_d = cfg
        need_grad = any(ctx.needs_input_grad[:3])
        out = torch.empty_like(x)
        h32 = torch.empty(x.shape, device=x.device, dtype=torch.float32) \
            if need_grad and x.dtype != torch.float32 else None
        last = x.new_empty(batch, dim, dtype=torch.float32)
        _lr_fwd_kernel[(batch, triton.cdiv(dim, block_d))](
            a, x, h0, out, h32, last, length, dim, triton.cdiv(length, chunk), HAS_H0=h0 is not None,
            SAVE_H32=h32 is not None, BLOCK_D=block_d, CHUNK=chunk, num_warps=4)
        if need_grad:
            ctx.save_for_backward(a, out if h32 is None else h32, h0)
            ctx.cfg, ctx.x_dtype = cfg, x.dtype
        return out, last

    @staticmethod
    def backward(ctx, dh, dlast):
        a, h, h0 = ctx.saved_tensors
        batch, length, dim = h.shape
        chunk, block_d = ctx.cfg
        dh = torch.zeros_like(h) if dh is None else dh.contiguous()
        da, dx = torch.empty_like(a), torch.empty(h.shape, device=h.device, dtype=ctx.x_dtype)
        dh0 = torch.empty_like(h0) if h0 is not None else None
        _lr_bwd_kernel[(batch, triton.cdiv(dim, block_d))](
            a, h, h0, dh, None if dlast is None else dlast.contiguous(), da, dx, dh0, length, dim,
            triton.cdiv(length, chunk), HAS_H0=h0 is not None, HAS_DLAST=dlast is not None,
            BLOCK_D=block_d, CHUNK=chunk, num_warps=4)
        return da, dx, dh0, None


def _check_device(x: torch.Tensor) -> None:
    if x.device.type != "cuda" and not _INTERPRET:
        raise RuntimeError("the Triton linear recurrence needs CUDA tensors (on CPU: set TRITON_INTERPRET=1 before "
                           "importing it, as the tests do)")


def triton_linear_recurrence(a, x, initial_state=None, *, chunk_size: int = 16, block_d: int = 64):
    """Same contract as `naive.reference`: returns (h (B, L, D) in x.dtype, h_last (B, D) fp32).

    a, x (B, L, D); initial_state (B, D). ``chunk_size`` (time tile) and ``block_d`` (channels per program) are
    powers of two; ``block_d`` is capped at D rounded up. fp64 inputs and empty sequences go to the reference.
    """
    if x.dtype == torch.float64 or x.numel() == 0:
        return reference(a, x, initial_state)
    _check_device(x)
    for name, v in (("chunk_size", chunk_size), ("block_d", block_d)):
        if v < 1 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two, got {v}")
    cfg = (int(chunk_size), min(int(block_d), _pow2(x.shape[-1])))
    h0 = None if initial_state is None else initial_state.contiguous()
    return _LinearRecurrenceTriton.apply(a.contiguous(), x.contiguous(), h0, cfg)
