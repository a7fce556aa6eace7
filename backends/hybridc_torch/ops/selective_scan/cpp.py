"""Fused CPU selective scan (``impl="cpp"``, what ``auto`` picks on CPU when the C++ kernels library builds): the
C++ kernel of ``hybridc_native/csrc`` (loaded by ``ops/_cpp_library.py``) wrapped in an autograd Function.

Why this shape: the selective scan's decay differs per (channel, state) element, so the SSD matmul trick does not
apply and a chunked einsum form is no faster than the loop on CPU. Speed comes from fusion instead: one pass keeping
the state in cache, never materialising [B, D, L, N] (Mamba's CUDA kernel does the same per thread block). The kernel
vectorises across channels (8 fp32 lanes with AVX2, 16 with AVX-512), so exp(dt A), the state update and the
C-weighted sum are lane-parallel; softplus(delta + bias), + D u and the silu(z) gate are fused into the same pass.
The backward (a custom autograd.Function) is a fused reverse scan that recomputes states from checkpoints stored
every ``_cpp_library.CHECKPOINT_EVERY`` steps; it also returns the gradients of delta (through the softplus), the
bias and z. See the C++ file's header for the layouts and the work split.

Glossary of dimension letters:
    B: batch    D: channels    L: sequence length    N: state size    G: groups of B/C (D % G == 0)
"""

from __future__ import annotations

import torch

import hybridc_native as native

from .. import _cpp_library
from .._cpp_library import dtype_code, ptr

__all__ = ["selective_scan_cpp"]


class _SelectiveScanFn(torch.autograd.Function):
    """(u, delta, bias, A, B, C, D, z, h0) -> ((C.h + D u) * silu(z), h_last), dt = softplus(delta + bias) in the kernel.

    Tensors contiguous in the accumulation dtype; B/C (Bt, G, N, L); bias, D, z, h0 may be None.
    """

    @staticmethod
    def forward(ctx, u, delta, bias, A, Bm, Cm, Dv, z, h0, softplus):
        lib = _cpp_library.load()
        batch, channels, length = u.shape
        groups, state = Bm.shape[1], Bm.shape[2]
        K = _cpp_library.CHECKPOINT_EVERY
        S = native.scan_splits(batch, groups, -(-(channels // groups) // lib.hybridc_ss_lanes(dtype_code(u))),
                               torch.get_num_threads())
        need_grad = any(ctx.needs_input_grad)
        out = torch.empty_like(u)
        last = u.new_empty(batch, channels, state)
        ckpt = u.new_empty(batch, channels, -(-length // K), state) if need_grad else None
        lib.hybridc_ss_forward(dtype_code(u), torch.get_num_threads(), int(softplus), ptr(u), ptr(delta), ptr(bias),
                               ptr(A), ptr(Bm), ptr(Cm), ptr(Dv), ptr(z), ptr(h0), ptr(out), ptr(last),
                               ptr(ckpt), batch, channels, length, state, groups, S, K)
        if need_grad:
            ctx.save_for_backward(u, delta, bias, A, Bm, Cm, Dv, z, ckpt)
            ctx.meta = (S, K, softplus)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        lib = _cpp_library.load()
        u, delta, bias, A, Bm, Cm, Dv, z, ckpt = ctx.saved_tensors
        S, K, softplus = ctx.meta
        batch, channels, length = u.shape
        groups, state = Bm.shape[1], Bm.shape[2]
        dout = torch.zeros_like(u) if dout is None else dout.to(u.dtype).contiguous()
        dlast = None if dlast is None else dlast.to(u.dtype).contiguous()
        du, ddelta = torch.empty_like(u), torch.empty_like(u)
        dz = torch.empty_like(u) if z is not None else None
        dA_part = u.new_empty(batch, channels, state)
        dB_part = u.new_empty(batch, groups, S, state, length)
        dC_part = u.new_empty(batch, groups, S, state, length)
        dD_part = u.new_empty(batch, channels)
        dbias_part = u.new_empty(batch, channels)
        dh0 = u.new_empty(batch, channels, state)
        lib.hybridc_ss_backward(dtype_code(u), torch.get_num_threads(), int(softplus), ptr(u), ptr(delta), ptr(bias),
                                ptr(A), ptr(Bm), ptr(Cm), ptr(Dv), ptr(z), ptr(ckpt), ptr(dout), ptr(dlast),
                                ptr(du), ptr(ddelta), ptr(dz), ptr(dA_part), ptr(dB_part), ptr(dC_part),
                                ptr(dD_part), ptr(dbias_part), ptr(dh0), batch, channels, length, state, groups,
                                S, K)
        dB = dB_part.sum(2) if S > 1 else dB_part[:, :, 0]
        dC = dC_part.sum(2) if S > 1 else dC_part[:, :, 0]
        need = ctx.needs_input_grad
        return (du, ddelta, dbias_part.sum(0) if bias is not None else None, dA_part.sum(0), dB, dC,
                dD_part.sum(0) if Dv is not None else None, dz, dh0 if need[8] else None, None)


def selective_scan_cpp(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       initial_state=None):
    """Same contract as `naive.reference`; CPU tensors. Raises if the kernel cannot be built here.

    One fused kernel call: dt = softplus(delta + bias), the scan, + D u and the silu(z) gate, with a fused backward.
    Returns (out (B, D, L) in u.dtype, last_state (B, D, N) in the accumulation dtype).
    """
    if _cpp_library.load() is None:
        raise RuntimeError("the C++ selective scan kernel is unavailable here (see the warning); use impl='reference'")
    acc = torch.float64 if u.dtype == torch.float64 else torch.float32
    c = lambda t: None if t is None else t.to(acc).contiguous()  # noqa: E731

    def bc(M):  # (B, N, L) or (B, G, N, L) -> (B, G, N, L)
        M = M.to(acc)
        return (M[:, None] if M.dim() == 3 else M).contiguous()

    y, last = _SelectiveScanFn.apply(c(u), c(delta), c(delta_bias), c(A), bc(B), bc(C), c(D), c(z),
                                     c(initial_state), bool(delta_softplus))
    return y.to(u.dtype), last
