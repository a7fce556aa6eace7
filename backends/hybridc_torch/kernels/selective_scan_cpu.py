"""Fused CPU selective scan (and the RG-LRU linear recurrence): the C++ kernels of ``hybridc_native/csrc/scan_kernels.cpp``
compiled on first use (shared with the JAX backend's XLA custom calls), called via ctypes.

Why this shape: the selective scan's decay differs per (channel, state) element, so the SSD matmul trick does not
apply and a chunked einsum form is no faster than the loop on CPU. Speed comes from fusion instead: one pass keeping
the state in cache, never materialising [B, D, L, N] (Mamba's CUDA kernel does the same per thread block). The kernel
vectorises across channels (8 fp32 lanes with AVX2, 16 with AVX-512), so exp(dt A), the state update and the
C-weighted sum are lane-parallel; softplus(delta + bias), + D u and the silu(z) gate are fused into the same pass.
The backward (a custom autograd.Function) is a fused reverse scan that recomputes states from checkpoints stored
every K steps; it also returns the gradients of delta (through the softplus), the bias and z. See the C++ file's
header for the layouts and the work split.

Build: plain C++ without torch headers (compiles in ~5-8 s with g++ 12, once), ``-O3 -march=native``, by
`hybridc_native.build` (cached, keyed by source, flags, compiler and CPU; safe under concurrent first use). Set
``HYBRIDC_DISABLE_CPP=1`` to skip it. Any failure (no compiler, compile error, load error) returns None from
`load()` with one warning; the caller then falls back to the reference.
"""

from __future__ import annotations

import ctypes

import torch

import hybridc_native as native

__all__ = ["load", "available", "selective_scan_cpp", "linear_recurrence_cpp", "delta_rule_cpp", "CHECKPOINT_EVERY"]

_SRC = native.CSRC / "scan_kernels.cpp"
CHECKPOINT_EVERY = 64  # K: forward stores the state every K steps for the backward's recomputation
ABI = 5
DELTA_CHECKPOINT_EVERY = 16  # the delta rule's backward recomputes chunks of this many steps ([K, V] states each)


def _build(extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Compile (or reuse from the cache) and load the library; `extra_flags` (appended) build variants for tests,
    e.g. ("-march=x86-64",) for the portable no-AVX code or ("-DHYBRIDC_VBYTES=64",) for 16 fp32 lanes."""
    lib = ctypes.CDLL(str(native.build("hybridc_scan_kernels", _SRC, (*native.FLAGS, *extra_flags))))
    if lib.hybridc_ss_abi_version() != ABI:
        raise RuntimeError("selective scan kernel ABI mismatch")
    vp, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.hybridc_ss_lanes.argtypes = [i32]
    lib.hybridc_ss_lanes.restype = i32
    lib.hybridc_ss_forward.argtypes = [i32, i32, i32] + [vp] * 12 + [i64] * 7
    lib.hybridc_ss_forward.restype = None
    lib.hybridc_ss_backward.argtypes = [i32, i32, i32] + [vp] * 20 + [i64] * 7
    lib.hybridc_ss_backward.restype = None
    lib.hybridc_lr_forward.argtypes = [i32, i32] + [vp] * 4 + [i64] * 3
    lib.hybridc_lr_forward.restype = None
    lib.hybridc_lr_backward.argtypes = [i32, i32] + [vp] * 7 + [i64] * 3
    lib.hybridc_lr_backward.restype = None
    lib.hybridc_dr_forward.argtypes = [i32, i32] + [vp] * 9 + [i64] * 6 + [ctypes.c_double]
    lib.hybridc_dr_forward.restype = None
    lib.hybridc_dr_backward.argtypes = [i32, i32] + [vp] * 14 + [i64] * 6 + [ctypes.c_double]
    lib.hybridc_dr_backward.restype = None
    return lib


_LOADER = native.LazyLibrary(lambda: _build(), "impl='auto' falls back to the reference (selective scan) and "
                                                "the chunked torch scan (linear recurrence)")


def load():
    """The compiled library, or None (with one warning) if it cannot be built or loaded here."""
    return _LOADER.load()


def available() -> bool:
    return load() is not None


def _ptr(t):
    return None if t is None else t.data_ptr()


def _code(t) -> int:
    """The kernels' dtype code: 0 float32, 1 float64."""
    return 0 if t.dtype == torch.float32 else 1


class _SelectiveScanFn(torch.autograd.Function):
    """(u, delta, bias, A, B, C, D, z, h0) -> ((C.h + D u) * silu(z), h_last), dt = softplus(delta + bias) in the kernel.

    Tensors contiguous in the accumulation dtype; B/C (Bt, G, N, L); bias, D, z, h0 may be None.
    """

    @staticmethod
    def forward(ctx, u, delta, bias, A, Bm, Cm, Dv, z, h0, softplus):
        lib = load()
        batch, channels, length = u.shape
        groups, state = Bm.shape[1], Bm.shape[2]
        K = CHECKPOINT_EVERY
        S = native.scan_splits(batch, groups, -(-(channels // groups) // lib.hybridc_ss_lanes(_code(u))),
                               torch.get_num_threads())
        need_grad = any(ctx.needs_input_grad)
        out = torch.empty_like(u)
        last = u.new_empty(batch, channels, state)
        ckpt = u.new_empty(batch, channels, -(-length // K), state) if need_grad else None
        lib.hybridc_ss_forward(_code(u), torch.get_num_threads(), int(softplus), _ptr(u), _ptr(delta), _ptr(bias),
                               _ptr(A), _ptr(Bm), _ptr(Cm), _ptr(Dv), _ptr(z), _ptr(h0), _ptr(out), _ptr(last),
                               _ptr(ckpt), batch, channels, length, state, groups, S, K)
        if need_grad:
            ctx.save_for_backward(u, delta, bias, A, Bm, Cm, Dv, z, ckpt)
            ctx.meta = (S, K, softplus)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        lib = load()
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
        lib.hybridc_ss_backward(_code(u), torch.get_num_threads(), int(softplus), _ptr(u), _ptr(delta), _ptr(bias),
                                _ptr(A), _ptr(Bm), _ptr(Cm), _ptr(Dv), _ptr(z), _ptr(ckpt), _ptr(dout), _ptr(dlast),
                                _ptr(du), _ptr(ddelta), _ptr(dz), _ptr(dA_part), _ptr(dB_part), _ptr(dC_part),
                                _ptr(dD_part), _ptr(dbias_part), _ptr(dh0), batch, channels, length, state, groups,
                                S, K)
        dB = dB_part.sum(2) if S > 1 else dB_part[:, :, 0]
        dC = dC_part.sum(2) if S > 1 else dC_part[:, :, 0]
        need = ctx.needs_input_grad
        return (du, ddelta, dbias_part.sum(0) if bias is not None else None, dA_part.sum(0), dB, dC,
                dD_part.sum(0) if Dv is not None else None, dz, dh0 if need[8] else None, None)


def selective_scan_cpp(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       initial_state=None):
    """Same contract as `selective_scan.reference`; requires `load()` to have succeeded (CPU tensors).

    One fused kernel call: dt = softplus(delta + bias), the scan, + D u and the silu(z) gate, with a fused backward.
    Returns (out (B, D, L) in u.dtype, last_state (B, D, N) in the accumulation dtype).
    """
    acc = torch.float64 if u.dtype == torch.float64 else torch.float32
    c = lambda t: None if t is None else t.to(acc).contiguous()  # noqa: E731

    def bc(M):  # (B, N, L) or (B, G, N, L) -> (B, G, N, L)
        M = M.to(acc)
        return (M[:, None] if M.dim() == 3 else M).contiguous()

    y, last = _SelectiveScanFn.apply(c(u), c(delta), c(delta_bias), c(A), bc(B), bc(C), c(D), c(z),
                                     c(initial_state), bool(delta_softplus))
    return y.to(u.dtype), last


class _LinearRecurrenceFn(torch.autograd.Function):
    """h = scan(a, x, h0) by the C++ kernel; a, x (B, L, W), h0 (B, W) contiguous in the accumulation dtype."""

    @staticmethod
    def forward(ctx, a, x, h0):
        lib = load()
        batch, length, width = x.shape
        h = torch.empty_like(x)
        lib.hybridc_lr_forward(0 if x.dtype == torch.float32 else 1, torch.get_num_threads(), _ptr(a), _ptr(x),
                               _ptr(h0), _ptr(h), batch, length, width)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, dh):
        lib = load()
        a, h, h0 = ctx.saved_tensors
        batch, length, width = h.shape
        dh = dh.to(h.dtype).contiguous()
        da, dx = torch.empty_like(a), torch.empty_like(h)
        dh0 = torch.empty_like(h0) if h0 is not None else None
        lib.hybridc_lr_backward(0 if h.dtype == torch.float32 else 1, torch.get_num_threads(), _ptr(a), _ptr(h),
                                _ptr(h0), _ptr(dh), _ptr(da), _ptr(dx), _ptr(dh0), batch, length, width)
        return da, dx, dh0


def linear_recurrence_cpp(a, x, initial_state=None):
    """Same contract as `linear_recurrence.reference`: (h (B, L, W) in x.dtype, h_last (B, W) accumulation dtype)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    batch, length, width = x.shape
    h0 = None if initial_state is None else initial_state.to(acc).contiguous()
    h = _LinearRecurrenceFn.apply(a.to(acc).contiguous(), x.to(acc).contiguous(), h0)
    if length == 0:
        last = h0 if h0 is not None else x.new_zeros(batch, width, dtype=acc)
    else:
        last = h[:, -1]
    return h.to(x.dtype), last


class _DeltaRuleFn(torch.autograd.Function):
    """(q, k, v, g, beta, h0) -> (o, last) by the fused sequential C++ kernel; g and h0 may be None.

    q, k (B, T, H, K); v (B, T, H, V); g, beta (B, T, H); h0 (B, H, K, V); contiguous in the accumulation dtype.
    """

    @staticmethod
    def forward(ctx, q, k, v, g, beta, h0, scale):
        lib = load()
        B, T, H, K = q.shape
        V = v.shape[-1]
        CK = DELTA_CHECKPOINT_EVERY
        need_grad = any(ctx.needs_input_grad)
        out = q.new_empty(B, T, H, V)
        last = q.new_empty(B, H, K, V)
        ckpt = q.new_empty(B, H, -(-T // CK), K, V) if need_grad else None
        lib.hybridc_dr_forward(_code(q), torch.get_num_threads(), _ptr(q), _ptr(k), _ptr(v), _ptr(g), _ptr(beta),
                               _ptr(h0), _ptr(out), _ptr(last), _ptr(ckpt), B, T, H, K, V, CK, float(scale))
        if need_grad:
            ctx.save_for_backward(q, k, v, g, beta, ckpt)
            ctx.meta = (scale, h0 is not None)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        lib = load()
        q, k, v, g, beta, ckpt = ctx.saved_tensors
        scale, has_h0 = ctx.meta
        B, T, H, K = q.shape
        V = v.shape[-1]
        dout = torch.zeros_like(v) if dout is None else dout.to(q.dtype).contiguous()
        dlast = None if dlast is None else dlast.to(q.dtype).contiguous()
        dq, dk, dv, dbeta = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(beta)
        dg = torch.empty_like(g) if g is not None else None
        dh0 = q.new_empty(B, H, K, V) if has_h0 else None
        lib.hybridc_dr_backward(_code(q), torch.get_num_threads(), _ptr(q), _ptr(k), _ptr(v), _ptr(g), _ptr(beta),
                                _ptr(ckpt), _ptr(dout), _ptr(dlast), _ptr(dq), _ptr(dk), _ptr(dv), _ptr(dg),
                                _ptr(dbeta), _ptr(dh0), B, T, H, K, V, DELTA_CHECKPOINT_EVERY, float(scale))
        return dq, dk, dv, dg, dbeta, dh0, None


def delta_rule_cpp(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """The (gated, when g is given) delta rule by the fused sequential C++ kernel; the references' contract:
    returns (o (B, T, H, V) in q.dtype, final state (B, H, K, V) in the accumulation dtype, or None)."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    if T == 0:
        S = q.new_zeros(B, H, K, v.shape[-1], dtype=acc) if initial_state is None else initial_state.to(acc)
        return q.new_zeros(B, 0, H, v.shape[-1]), (S if output_final_state else None)
    c = lambda t: None if t is None else t.to(acc).contiguous()  # noqa: E731
    o, S = _DeltaRuleFn.apply(c(q), c(k), c(v), c(g), c(beta), c(initial_state), scale)
    return o.to(q.dtype), (S if output_final_state else None)
