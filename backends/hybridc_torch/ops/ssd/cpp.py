"""SSD on CPU (``impl="cpp"``): the fused sequential C++ kernel of ``hybridc_native/csrc/ssd.cpp`` (loaded by
``ops/_cpp_library.py``) wrapped in an autograd Function.

Why this shape: SSD's decay is one scalar per (step, head), so a sequential step costs ~3 vector ops per state element
(rows of the [P, N] state stay in registers across a tile of steps), against the chunked form's T x T blocks (~T / N
times the arithmetic, plus the autograd graph's memory traffic): faster at every shape measured (benchmarks/RESULTS.md
"Issue 16"). The kernel vectorises across the head dim P, fuses softplus(dt + bias), exp(dt A) and the D skip, reads
x, dt, B and C through strides (the Mamba-2 layer's views of its conv output are not copied), and its backward is a
fused reverse scan recomputing states from checkpoints stored every CHECKPOINT_EVERY steps. ``z`` (the optional silu
gate) is applied here in torch. See the C++ file's header for the math of the adjoint, the layouts and the work split.

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups of B/C (H % G == 0)    N: state size
    S: tasks per (batch, head)    K: checkpoint interval
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

import hybridc_native as native

from .. import _cpp_library
from .._cpp_library import dtype_code, ptr

__all__ = ["ssd_cpp", "CHECKPOINT_EVERY"]

CHECKPOINT_EVERY = 64  # K: the forward stores the state every K steps for the backward's recomputation


def _meta(x, state):
    lib = _cpp_library.load()
    batch, _, heads, head_dim = x.shape
    block = lib.hybridc_ssd_block(dtype_code(x), head_dim)
    nb = -(-head_dim // block)
    S = native.scan_splits(batch, heads, nb, torch.get_num_threads())
    return lib, block, nb, S, CHECKPOINT_EVERY


def _flat_channels(t, acc):
    """t (B, L, C1, C2) or (B, L, H) in the accumulation dtype, kept as a strided view when its channel dims flatten
    to one stride (the layer's x, B, C: views of its channel-major conv output), else made contiguous."""
    t = t.to(acc)
    if t.dim() == 4 and t.shape[2] > 1 and t.stride(2) != t.shape[3] * t.stride(3):
        t = t.contiguous()
    return t


def _strides(x, dt, Bm, Cm):
    """The kernel's `strides` argument: (batch, step, channel) element strides of x, dt, B, C; None when all four are
    contiguous."""
    if all(t.is_contiguous() for t in (x, dt, Bm, Cm)):
        return None
    vals = [*x.stride()[:2], x.stride(3), *dt.stride(), *Bm.stride()[:2], Bm.stride(3), *Cm.stride()[:2], Cm.stride(3)]
    return (ctypes.c_int64 * 12)(*vals)


class _SSDFn(torch.autograd.Function):
    """(x, dt, bias, A, B, C, D, h0) -> (S_t C_t + D x_t, S_L), dt = softplus(dt + bias) in the kernel.

    Tensors in the accumulation dtype: x (B, L, H, P); dt (B, L, H); B, C (B, L, G, N) (strided views allowed, see
    `_flat_channels`); bias, A (H,); D (H, P); h0 (B, H, P, N) contiguous. bias, D and h0 may be None.
    """

    @staticmethod
    def forward(ctx, x, dt, bias, A, Bm, Cm, Dv, h0, softplus, grad_enabled):
        batch, length, heads, head_dim = x.shape
        groups, state = Bm.shape[2], Bm.shape[3]
        lib, block, nb, S, K = _meta(x, state)
        need_grad = grad_enabled and any(ctx.needs_input_grad)
        y = x.new_empty(x.shape)  # contiguous (x may be a strided view)
        last = x.new_empty(batch, heads, head_dim, state)
        ckpt = x.new_empty(batch, heads, -(-length // K), state, nb * block) if need_grad else None
        lib.hybridc_ssd_forward(dtype_code(x), torch.get_num_threads(), int(softplus), ptr(x), ptr(dt), ptr(bias),
                                ptr(A), ptr(Bm), ptr(Cm), ptr(Dv), ptr(h0), ptr(y), ptr(last), ptr(ckpt),
                                batch, length, heads, head_dim, state, groups, S, K, _strides(x, dt, Bm, Cm))
        if need_grad:
            ctx.save_for_backward(x, dt, bias, A, Bm, Cm, Dv, ckpt)
            ctx.meta = (S, K, softplus, h0 is not None)
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        x, dt, bias, A, Bm, Cm, Dv, ckpt = ctx.saved_tensors
        S, K, softplus, has_h0 = ctx.meta
        lib = _cpp_library.load()
        batch, length, heads, head_dim = x.shape
        groups, state = Bm.shape[2], Bm.shape[3]
        dy = x.new_zeros(x.shape) if dy is None else dy.to(x.dtype).contiguous()
        dlast = None if dlast is None else dlast.to(x.dtype).contiguous()
        dx = x.new_empty(x.shape)
        ddt_part = x.new_empty(batch, heads, S, length)
        dA_part = x.new_empty(batch, heads, S)
        dB_part = x.new_empty(batch, heads, S, length, state)
        dC_part = x.new_empty(batch, heads, S, length, state)
        dD_part = x.new_empty(batch, heads, head_dim)
        dh0 = x.new_empty(batch, heads, head_dim, state) if has_h0 else None
        lib.hybridc_ssd_backward(dtype_code(x), torch.get_num_threads(), int(softplus), ptr(x), ptr(dt), ptr(bias),
                                 ptr(A), ptr(Bm), ptr(Cm), ptr(Dv), ptr(ckpt), ptr(dy), ptr(dlast), ptr(dx),
                                 ptr(ddt_part), ptr(dA_part), ptr(dB_part), ptr(dC_part), ptr(dD_part), ptr(dh0),
                                 batch, length, heads, head_dim, state, groups, S, K, _strides(x, dt, Bm, Cm))
        ddt = ddt_part.sum(2).transpose(1, 2)  # (B, L, H)
        hg = heads // groups  # heads per group share B and C: sum their partials

        def per_group(part):  # (B, H, S, L, N) -> (B, L, G, N)
            return part.reshape(batch, groups, hg * S, length, state).sum(2).transpose(1, 2)

        return (dx, ddt, ddt.sum((0, 1)) if bias is not None else None, dA_part.sum((0, 2)), per_group(dB_part),
                per_group(dC_part), dD_part.sum(0) if Dv is not None else None, dh0, None, None)


def ssd_cpp(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False):
    """SSD by the fused C++ kernel (CPU; `chunk_size` is ignored); `naive.reference`'s contract: returns
    (y (B, L, H, P) in x.dtype, final_states (B, H, P, N) in the accumulation dtype). Raises if the kernel cannot be
    built here.

    x (B, L, H, P); dt (B, L, H); A (H,); B, C (B, L, G, N); D (H,) or (H, P); z (B, L, H, P); dt_bias (H,);
    initial_states (B, H, P, N).
    """
    if _cpp_library.load() is None:
        raise RuntimeError("the C++ CPU kernels are unavailable here; use impl='chunk'")
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    batch, length, heads, head_dim = x.shape
    if length == 0:  # nothing to scan: the state passes through
        S0 = initial_states.to(acc) if initial_states is not None else \
            x.new_zeros(batch, heads, head_dim, B.shape[-1], dtype=acc)
        return x.new_zeros(x.shape), S0
    c = lambda t: None if t is None else t.to(acc).contiguous()  # noqa: E731
    Dv = None if D is None else (D[:, None] if D.dim() == 1 else D).to(acc).expand(heads, head_dim).contiguous()
    xs, dts, Bs, Cs = (_flat_channels(t, acc) for t in (x, dt, B, C))  # no copies of the layer's views
    y, final = _SSDFn.apply(xs, dts, c(dt_bias), c(A), Bs, Cs, Dv, c(initial_states), bool(dt_softplus),
                            torch.is_grad_enabled())
    if z is not None:
        y = y * F.silu(z.to(acc))
    return y.to(x.dtype), final
