"""The gated group RMSNorm on CPU (``impl="cpp"``): the fused C++ kernel of ``hybridc_native/csrc/rms_norm_gated.cpp``
(loaded by ``ops/_cpp_library.py``) in an autograd Function.

Why: the torch expression is ~8 elementwise passes over [rows, E] forward and ~15 backward; the kernel takes one pass
each way (a row's groups are reduced and written while in L1), reads y and z through a row stride (z is the Mamba-2
layer's slice of its projection) and can write dz into a given view (the projection's gradient). See the C++ file.

Glossary of dimension letters:
    R: rows (all leading dims)    E: channels    S: tasks (ranges of rows; dweight partials)
"""
from __future__ import annotations

import torch

from .. import _cpp_library
from .._cpp_library import dtype_code, ptr

__all__ = ["rms_norm_gated_cpp", "NormFn"]


def _rows(t):
    """(..., E) -> (R, E) with channel stride 1: a view where the leading dims merge, else a copy."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def _tasks(rows: int) -> int:
    return max(1, min(rows, 8 * torch.get_num_threads()))


class NormFn(torch.autograd.Function):
    """(y, z, weight, group_size, eps, mode) -> out (R, E) contiguous; y, z (R, E) with channel stride 1, weight (E,)
    contiguous or None (mode 0); one float dtype (fp32 or fp64). mode: 0 gate only, 1 norm after the gate, 2 norm
    before the gate."""

    @staticmethod
    def forward(ctx, y, z, weight, group_size, eps, mode):
        rows, E = y.shape
        out = y.new_empty(rows, E)
        _cpp_library.load().hybridc_gnorm_forward(dtype_code(y), torch.get_num_threads(), mode, ptr(y), ptr(z),
                                                  ptr(weight), ptr(out), rows, E, group_size, eps, y.stride(0),
                                                  z.stride(0), _tasks(rows))
        ctx.save_for_backward(y, z, weight)
        ctx.meta = (group_size, eps, mode)
        return out

    @staticmethod
    def backward(ctx, dout):
        y, z, weight = ctx.saved_tensors
        group_size, eps, mode = ctx.meta
        rows, E = y.shape
        S = _tasks(rows)
        dout = dout.to(y.dtype).contiguous()
        dy, dz = y.new_empty(rows, E), y.new_empty(rows, E)
        dw_part = y.new_empty(S, E) if mode else None
        _cpp_library.load().hybridc_gnorm_backward(dtype_code(y), torch.get_num_threads(), mode, ptr(y), ptr(z),
                                                   ptr(weight), ptr(dout), ptr(dy), ptr(dz), ptr(dw_part), rows, E,
                                                   group_size, eps, y.stride(0), z.stride(0), dz.stride(0), S)
        return dy, dz, None if dw_part is None else dw_part.sum(0), None, None, None


def rms_norm_gated_cpp(y, z, weight, group_size: int, eps: float, norm_before_gate: bool = False):
    """`naive.reference`'s contract by the fused kernel (CPU; fp32 compute, fp64 for fp64 inputs). RuntimeError if the
    kernel cannot be built here."""
    if _cpp_library.load() is None:
        raise RuntimeError("the C++ CPU kernels are unavailable here; use impl='reference'")
    acc = torch.float64 if y.dtype == torch.float64 else torch.float32
    shape = y.shape
    if y.numel() == 0:
        return y.new_zeros(shape)
    mode = 0 if weight is None else 2 if norm_before_gate else 1
    w = None if weight is None else weight.to(acc).contiguous()
    out = NormFn.apply(_rows(y.to(acc)), _rows(z.to(acc)), w, int(group_size if weight is not None else shape[-1]),
                       float(eps), mode)
    return out.view(shape).to(y.dtype)
