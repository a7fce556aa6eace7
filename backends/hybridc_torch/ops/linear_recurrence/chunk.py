"""Diagonal linear recurrence, the two-level chunked scan in pure torch (``impl="chunk"``, the fallback of ``auto``
on CPU when no C++ compiler is available).

Inside chunks of T steps the recurrence runs as T vectorised steps over all (batch, chunk, channel) at once: a first
pass keeps only the chunk-local end states and decay products (products only, never divisions, so a_t = 0 resets
are exact); the chunk-boundary states are the same recurrence one level up (recursively); a second pass writes the
outputs from the true chunk starts. Python-level steps per call: about 2T + L/T instead of L. Backward is a custom
autograd.Function: the gradient of a linear recurrence is the same recurrence run in reverse
(g_t = dh_t + a_{t+1} g_{t+1}; dx_t = g_t; da_t = g_t h_{t-1}), so it reuses the scan.

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels    T: chunk size
"""

from __future__ import annotations

import math

import torch

from .naive import _acc_dtype

__all__ = ["chunk_linear_recurrence"]


def _chunk_scan(a: torch.Tensor, x: torch.Tensor, h0, chunk_size: int) -> torch.Tensor:
    """No-grad scan in the accumulation dtype. a, x (B, L, D); h0 (B, D) or None. Returns h (B, L, D).

    Pass 1 walks the T steps of every chunk at once keeping only (B, nc, D) running buffers: the chunk-local end
    state (from a zero start) and the chunk's decay product. The boundary states are the same recurrence over
    chunks (recursive call). Pass 2 walks the T steps again from the true chunk starts, writing the output.
    """
    batch, length, channels = x.shape
    if length == 0:
        return x.new_zeros(batch, 0, channels)
    T = max(2, min(int(chunk_size), length))  # T >= 2: the chunk-level recursion must shrink the length
    if length == 1:
        return a * h0[:, None] + x if h0 is not None else x.clone()  # bitwise what the step computes
    nc = -(-length // T)
    pad = nc * T - length
    if pad:  # padding steps come after every real step: a = 1, x = 0 leaves the real outputs untouched
        a = torch.cat([a, a.new_ones(batch, pad, channels)], dim=1)
        x = torch.cat([x, x.new_zeros(batch, pad, channels)], dim=1)
    av, xv = a.reshape(batch, nc, T, channels), x.reshape(batch, nc, T, channels)
    out = torch.empty_like(xv)  # (B, nc, T, D)
    if nc == 1:
        starts = h0[:, None] if h0 is not None else None  # (B, 1, D)
    else:
        end = xv[:, :, 0].clone()  # (B, nc, D) chunk-local state from a zero start
        prod = av[:, :, 0].clone()  # (B, nc, D) prod of a over the chunk so far
        for t in range(1, T):
            torch.addcmul(xv[:, :, t], av[:, :, t], end, out=end)
            prod.mul_(av[:, :, t])
        ends = _chunk_scan(prod, end, h0, T)  # (B, nc, D): true state after each chunk
        first = h0[:, None] if h0 is not None else ends.new_zeros(batch, 1, channels)
        starts = torch.cat([first, ends[:, :-1]], dim=1)  # (B, nc, D): state entering each chunk
    if starts is None:
        out[:, :, 0] = xv[:, :, 0]
    else:
        torch.addcmul(xv[:, :, 0], av[:, :, 0], starts, out=out[:, :, 0])
    for t in range(1, T):
        torch.addcmul(xv[:, :, t], av[:, :, t], out[:, :, t - 1], out=out[:, :, t])
    return out.view(batch, nc * T, channels)[:, :length]


class _ChunkScanFn(torch.autograd.Function):
    """h = scan(a, x, h0) with a reverse-scan backward; a, x, h0 in the accumulation dtype."""

    @staticmethod
    def forward(ctx, a, x, h0, chunk_size):
        h = _chunk_scan(a, x, h0, chunk_size)
        ctx.save_for_backward(a, h, h0)
        ctx.chunk_size = chunk_size
        ctx.has_h0 = h0 is not None
        return h

    @staticmethod
    def backward(ctx, dh):
        a, h, h0 = ctx.saved_tensors
        batch, length, channels = h.shape
        if length == 0:
            da = torch.zeros_like(a)
            return da, torch.zeros_like(h), (torch.zeros_like(h0) if ctx.has_h0 else None), None
        dh = dh.to(h.dtype)
        # reverse: g_t = dh_t + a_{t+1} g_{t+1}; flipped, the coefficient of step s is a_{L-s} (none for s=0)
        a_rev = torch.cat([a.new_ones(batch, 1, channels), a.flip(1)[:, :-1]], dim=1)  # (B, L, D)
        g = _chunk_scan(a_rev, dh.flip(1), None, ctx.chunk_size).flip(1)  # (B, L, D) = dL/dx
        da = dh0 = None
        if ctx.needs_input_grad[0]:
            prev = h.new_zeros(batch, 1, channels) if h0 is None else h0[:, None]
            da = g * torch.cat([prev, h[:, :-1]], dim=1)  # g_t * h_{t-1}
        if ctx.has_h0 and ctx.needs_input_grad[2]:
            dh0 = g[:, 0] * a[:, 0]
        return da, g, dh0, None


def _auto_chunk(length: int) -> int:
    """About sqrt(L) (a power of two in [8, 128]): balances the 2T in-chunk steps against the L/T chunk steps."""
    return int(min(128, max(8, 2 ** round(math.log2(max(length, 1)) / 2))))


def chunk_linear_recurrence(a, x, initial_state=None, *, chunk_size: int | None = None):
    """Chunked scan, same contract as `reference`: returns (h (B, L, D) in x.dtype, h_last (B, D) fp32).

    ``chunk_size`` None picks about sqrt(L) (see `_auto_chunk`)."""
    batch, length, channels = x.shape
    if chunk_size is None:
        chunk_size = _auto_chunk(length)
    acc = _acc_dtype(x.dtype)
    h0 = initial_state.to(acc) if initial_state is not None else None
    h = _ChunkScanFn.apply(a.to(acc), x.to(acc), h0, int(chunk_size))  # (B, L, D)
    if length == 0:
        h_last = h0 if h0 is not None else x.new_zeros(batch, channels, dtype=acc)
    else:
        h_last = h[:, -1]
    return h.to(x.dtype), h_last
