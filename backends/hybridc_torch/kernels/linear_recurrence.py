"""Diagonal linear recurrence h_t = a_t * h_{t-1} + x_t (the scan behind Griffin's RG-LRU, LRU, S5, ...).

Paper: De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models"
(2024), Sec. 2.4. Reference implementation: google-deepmind/recurrentgemma ``rnn_scan``
(recurrentgemma/torch/layers.py): sequential loop with an fp32 accumulator, outputs cast back to x's dtype.

Fast forms. ``impl="cpp"`` (what ``auto`` picks on CPU when the C++ kernels library builds, see
selective_scan_cpu.py): one fused pass, vectorised over channels, with a fused reverse-scan backward; it measured
faster and, unlike many small torch ops, is not hurt by OpenMP barrier costs on busy cores. ``impl="chunk"`` (the
fallback of ``auto`` when no compiler is available; pure torch): a two-level chunked scan. Inside chunks of T steps the recurrence
runs as T vectorised steps over all (batch, chunk, channel) at once: a first pass keeps only the chunk-local end
states and decay products (products only, never divisions, so a_t = 0 resets are exact); the chunk-boundary states
are the same recurrence one level up (recursively); a second pass writes the outputs from the true chunk starts.
Python-level steps per call: about 2T + L/T instead of L. Backward is a custom autograd.Function: the gradient of a linear recurrence is the same
recurrence run in reverse (g_t = dh_t + a_{t+1} g_{t+1}; dx_t = g_t; da_t = g_t h_{t-1}), so it reuses the scan.

GPU form (``impl="triton"``, what ``auto`` picks on CUDA when triton imports): ``triton_linear_recurrence`` (time
tiles scanned in registers, coalesced over channels; its backward is the reverse-scan kernel).

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels
"""

from __future__ import annotations

import math

import torch

from . import _dispatch
from ._dispatch import choose

__all__ = ["linear_recurrence", "linear_recurrence_step", "reference"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def linear_recurrence_step(h, a_t, x_t):
    """One step: returns the new state a_t * h + x_t (B, D) in the accumulation dtype; `h` is not mutated."""
    acc = _acc_dtype(x_t.dtype)
    return a_t.to(acc) * h.to(acc) + x_t.to(acc)  # (B, D)


def reference(a, x, initial_state=None):
    """Sequential oracle. a, x (B, L, D); initial_state (B, D). Returns (h (B, L, D) in x.dtype, h_last (B, D) fp32)."""
    batch, length, channels = x.shape
    acc = _acc_dtype(x.dtype)
    h = initial_state.to(acc) if initial_state is not None else x.new_zeros(batch, channels, dtype=acc)  # (B, D)
    hs = []
    for t in range(length):
        h = linear_recurrence_step(h, a[:, t], x[:, t])  # (B, D)
        hs.append(h)
    out = torch.stack(hs, dim=1) if hs else x.new_zeros(batch, 0, channels, dtype=acc)  # (B, L, D)
    return out.to(x.dtype), h


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


def cpp(a, x, initial_state=None):
    """C++ scan (forward and reverse-scan backward) from the compiled CPU kernels library (selective_scan_cpu)."""
    from . import selective_scan_cpu

    if selective_scan_cpu.load() is None:
        raise RuntimeError("the C++ CPU kernels are unavailable here (see the warning); use impl='chunk'")
    return selective_scan_cpu.linear_recurrence_cpp(a, x, initial_state)


def _triton(*args, **kwargs):
    """The Triton GPU kernels (``triton_linear_recurrence``), imported on first call (torch without triton imports)."""
    from .triton_linear_recurrence import triton_linear_recurrence
    return triton_linear_recurrence(*args, **kwargs)


_IMPLS = {"reference": reference, "chunk": chunk_linear_recurrence, "cpp": cpp, "triton": _triton}


def _auto(device) -> str:
    """CPU: the C++ scan when the kernels library builds, else the chunked torch scan; CUDA: the Triton kernels
    when triton imports; elsewhere the reference."""
    kind = torch.device(device).type
    if kind != "cpu":
        return "triton" if kind == "cuda" and _dispatch.triton_available() else "reference"
    from . import selective_scan_cpu

    return "cpp" if selective_scan_cpu.load() is not None else "chunk"


def _pick(impl: str, device: torch.device | str = "cpu"):
    return choose("linear_recurrence", _IMPLS, impl, _auto(device))


def linear_recurrence(a, x, initial_state=None, *, impl="auto", chunk_size=None):
    """h_t = a_t * h_{t-1} + x_t with h_{-1} = initial_state (zeros if None).

    a, x (B, L, D); initial_state (B, D). Returns (h (B, L, D) in x.dtype, h_last (B, D) fp32).
    ``impl``: "auto" (CPU: "cpp", or "chunk" if the C++ kernels cannot be built; CUDA: "triton" when triton
    imports; reference elsewhere), "cpp", "chunk", "triton", "reference". ``chunk_size`` is passed to the chunked
    scan (default: about sqrt(L)) and ignored by the others.
    """
    fn = _pick(impl, x.device)
    if fn is chunk_linear_recurrence and chunk_size is not None:
        return fn(a, x, initial_state, chunk_size=chunk_size)
    return fn(a, x, initial_state)
