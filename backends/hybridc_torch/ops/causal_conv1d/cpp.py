"""The causal depthwise conv1d (+ bias, + optional silu) on CPU (``impl="cpp"``): the fused C++ kernel of
``hybridc_native/csrc/causal_conv1d.cpp`` (loaded by ``ops/_cpp_library.py``) in an autograd Function.

Why: the reference transposes x to channel-major, concatenates the state in front (a copy), runs F.conv1d, then silu
(another pass), and its backward takes four more passes and a cat. The kernel reads x where it lies (any batch and
step strides, channel stride 1: the Mamba-2 layer's slice of its projection), walks time with the last K-1 inputs
in registers and writes y time-major and contiguous (the layout the SSD kernel reads); its backward recomputes the
pre-activation and writes dx, dweight, dbias (and the state's gradient) in one pass. See the C++ file's header.

Glossary of dimension letters:
    B: batch    L: sequence length    C: channels    K: conv width
"""
from __future__ import annotations

import torch

from .. import _cpp_library
from .._cpp_library import dtype_code, ptr
from .naive import new_state, reference

__all__ = ["causal_conv1d_cpp", "ConvFn"]


def _rows(t):
    """t (B, L, C) with channel stride 1 (a view is kept), else a contiguous copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


class ConvFn(torch.autograd.Function):
    """(x, weight, bias, h0, silu) -> y (B, L, C) contiguous. x (B, L, C) with channel stride 1; weight (C, K),
    bias (C,) or None, h0 (B, C, K-1) or None contiguous; all in one float dtype (fp32 or fp64)."""

    @staticmethod
    def forward(ctx, x, weight, bias, h0, silu):
        lib = _cpp_library.load()
        batch, length, channels = x.shape
        y = x.new_empty(batch, length, channels)
        lib.hybridc_conv_forward(dtype_code(x), torch.get_num_threads(), int(silu), ptr(x), ptr(weight), ptr(bias),
                                 ptr(h0), ptr(y), batch, length, channels, weight.shape[1], x.stride(0), x.stride(1))
        ctx.save_for_backward(x, weight, bias, h0)
        ctx.silu = silu
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, h0 = ctx.saved_tensors
        batch, length, channels = x.shape
        K = weight.shape[1]
        dy = dy.to(x.dtype).contiguous()
        dx = x.new_empty(x.shape)
        lib = _cpp_library.load()
        part = x.new_empty(batch * -(-length // lib.hybridc_conv_rows()), K + 1, channels)  # per task: dw^T, dbias
        dh0 = x.new_empty(batch, channels, K - 1) if h0 is not None and ctx.needs_input_grad[3] else None
        lib.hybridc_conv_backward(dtype_code(x), torch.get_num_threads(), int(ctx.silu), ptr(x), ptr(weight),
                                  ptr(bias), ptr(h0), ptr(dy), ptr(dx), ptr(part), ptr(dh0), batch, length, channels,
                                  K, x.stride(0), x.stride(1), dx.stride(0), dx.stride(1))
        part = part.sum(0)  # (K + 1, C)
        return dx, part[:K].t(), part[K] if bias is not None else None, dh0, None


def causal_conv1d_cpp(x, weight, bias=None, conv_state=None, activation=None):
    """`naive.reference`'s contract by the fused kernel (CPU, fp32 / fp64 compute; other dtypes computed in fp32).
    Widths past the kernel's limit (``hybridc_conv_kmax``, 8) run the reference. RuntimeError if the kernel cannot be
    built here."""
    lib = _cpp_library.load()
    if lib is None:
        raise RuntimeError("the C++ CPU kernels are unavailable here; use impl='reference'")
    K = weight.shape[-1]
    if K > lib.hybridc_conv_kmax() or x.shape[1] == 0:
        return reference(x, weight, bias, conv_state, activation)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    c = lambda t: None if t is None else t.to(acc).contiguous()  # noqa: E731
    xa = _rows(x.to(acc))
    y = ConvFn.apply(xa, c(weight), c(bias), c(conv_state), activation == "silu")
    return y.to(x.dtype), new_state(x, conv_state, K)
