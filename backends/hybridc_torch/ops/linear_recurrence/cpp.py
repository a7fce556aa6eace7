"""Diagonal linear recurrence on CPU (``impl="cpp"``, what ``auto`` picks on CPU when the C++ kernels library
builds): the C++ scan of ``hybridc_native/csrc`` (loaded by ``ops/_cpp_library.py``) in an autograd Function. One
fused pass, vectorised over channels, with a fused reverse-scan backward; it measured faster than the chunked torch
scan and, unlike many small torch ops, is not hurt by OpenMP barrier costs on busy cores.

Glossary of dimension letters:
    B: batch    L: sequence length    W: channels
"""

from __future__ import annotations

import torch

from .. import _cpp_library
from .._cpp_library import dtype_code, ptr

__all__ = ["linear_recurrence_cpp"]


class _LinearRecurrenceFn(torch.autograd.Function):
    """h = scan(a, x, h0) by the C++ kernel; a, x (B, L, W), h0 (B, W) contiguous in the accumulation dtype."""

    @staticmethod
    def forward(ctx, a, x, h0):
        lib = _cpp_library.load()
        batch, length, width = x.shape
        h = torch.empty_like(x)
        lib.hybridc_lr_forward(dtype_code(x), torch.get_num_threads(), ptr(a), ptr(x), ptr(h0), ptr(h),
                               batch, length, width)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, dh):
        lib = _cpp_library.load()
        a, h, h0 = ctx.saved_tensors
        batch, length, width = h.shape
        dh = dh.to(h.dtype).contiguous()
        da, dx = torch.empty_like(a), torch.empty_like(h)
        dh0 = torch.empty_like(h0) if h0 is not None else None
        lib.hybridc_lr_backward(dtype_code(h), torch.get_num_threads(), ptr(a), ptr(h), ptr(h0), ptr(dh),
                                ptr(da), ptr(dx), ptr(dh0), batch, length, width)
        return da, dx, dh0


def linear_recurrence_cpp(a, x, initial_state=None):
    """Same contract as `naive.reference`: (h (B, L, W) in x.dtype, h_last (B, W) accumulation dtype); CPU tensors.
    Raises if the kernel cannot be built here."""
    if _cpp_library.load() is None:
        raise RuntimeError("the C++ CPU kernels are unavailable here (see the warning); use impl='chunk'")
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    batch, length, width = x.shape
    h0 = None if initial_state is None else initial_state.to(acc).contiguous()
    h = _LinearRecurrenceFn.apply(a.to(acc).contiguous(), x.to(acc).contiguous(), h0)
    if length == 0:
        last = h0 if h0 is not None else x.new_zeros(batch, width, dtype=acc)
    else:
        last = h[:, -1]
    return h.to(x.dtype), last
