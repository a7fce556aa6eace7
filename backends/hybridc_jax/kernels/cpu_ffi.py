"""The fused C++ CPU kernels (selective scan, linear recurrence) as XLA custom calls: torch's kernels, run by JAX.

Why: XLA:CPU cannot fuse a selective scan. Its best form here (``selective_scan.chunk_selective_scan``) is 2.4-3.5x
slower than the fused C++ kernel torch runs (B4 L1024 D512 N16: 57 vs 20 ms forward), because XLA runs the per-step
work of a ``lax.scan`` body as separate small loops on one thread; the linear recurrence's ``lax.scan`` pays ~2 us per
step. The kernels of ``hybridc_native/csrc/`` are plain C++; ``xla_ffi.cpp`` wraps them as typed XLA
FFI handlers (the interface jaxlib ships headers for, ``jax.ffi.include_dir()``), built once by `hybridc_native.build`
and registered with ``jax.ffi.register_ffi_target``. They run on XLA's buffers in place (no host callback, no copies)
and are called with ``jax.ffi.ffi_call``; gradients are a ``jax.custom_vjp`` whose backward is the kernels' fused
reverse scan (recomputing from states checkpointed every K steps), exactly as in torch. So the two backends run the
same machine code and agree to rounding.

Contract: the same as the ``reference`` of each kernel module. CPU only (the targets are registered for the "cpu"
platform); under ``jax.vmap`` the call loops over the mapped axis (``vmap_method="sequential"``); forward-mode
(``jax.jvp``) is not defined (custom_vjp). ``HYBRIDC_DISABLE_CPP=1`` or a failed build makes `load()` return None
(one warning) and ``auto`` falls back to the XLA forms.
"""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import hybridc_native as native

__all__ = ["load", "available", "selective_scan_cpp", "linear_recurrence_cpp", "delta_rule_cpp", "CHECKPOINT_EVERY"]

CHECKPOINT_EVERY = 64  # K: the forward stores the state every K steps for the backward's recomputation
_SRC = Path(__file__).resolve().parents[1] / "csrc" / "xla_ffi.cpp"  # the XLA FFI binding lives with the JAX backend
_TARGETS = {"hybridc_ss_forward": "HybridcSsForward", "hybridc_ss_backward": "HybridcSsBackward",
            "hybridc_lr_forward": "HybridcLrForward", "hybridc_lr_backward": "HybridcLrBackward",
            "hybridc_dr_forward": "HybridcDrForward", "hybridc_dr_backward": "HybridcDrBackward"}
DELTA_CHECKPOINT_EVERY = 16  # the delta rule's backward recomputes chunks of this many steps


def _build() -> ctypes.CDLL:
    path = native.build("hybridc_xla_ffi", _SRC, include_dirs=(jax.ffi.include_dir(), str(native.CSRC)),
                        depends=(native.CSRC / "scan_kernels.cpp",))
    lib = ctypes.CDLL(str(path))
    lib.hybridc_ss_lanes.argtypes = [ctypes.c_int]
    lib.hybridc_ss_lanes.restype = ctypes.c_int
    for target, symbol in _TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    return lib


_LOADER = native.LazyLibrary(_build, "impl='auto' in JAX falls back to the XLA forms")


def load():
    """The compiled library with its XLA targets registered, or None (with one warning) if it cannot be built here."""
    return _LOADER.load()


def available() -> bool:
    return load() is not None


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _acc(dtype):
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _none(acc):
    """The stand-in for an absent optional operand: a zero-size array (a null pointer in the kernel)."""
    return jnp.zeros((0,), acc)


def _sds(shape, dtype):
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _ss_meta(u, Bm, softplus, K):
    batch, channels, _ = u.shape
    groups = Bm.shape[1]
    lanes = load().hybridc_ss_lanes(0 if u.dtype == jnp.float32 else 1)
    threads = _threads()
    S = native.scan_splits(batch, groups, -(-(channels // groups) // lanes), threads)
    return dict(softplus=np.int64(softplus), splits=np.int64(S), checkpoint_every=np.int64(K),
                nthreads=np.int64(threads))


def _ss_forward(u, delta, bias, A, Bm, Cm, Dv, z, h0, softplus, K, with_ckpt):
    batch, channels, length = u.shape
    state = Bm.shape[2]
    meta = _ss_meta(u, Bm, softplus, K)
    nK = -(-length // K)
    ckpt_shape = (batch, channels, nK, state) if with_ckpt else (0,)
    call = jax.ffi.ffi_call("hybridc_ss_forward",
                            (_sds(u.shape, u.dtype), _sds((batch, channels, state), u.dtype), _sds(ckpt_shape, u.dtype)),
                            vmap_method="sequential")
    return call(u, delta, bias, A, Bm, Cm, Dv, z, h0, **meta)


@functools.partial(jax.custom_vjp, nondiff_argnums=(9, 10))
def _selective_scan(u, delta, bias, A, Bm, Cm, Dv, z, h0, softplus, K):
    out, last, _ = _ss_forward(u, delta, bias, A, Bm, Cm, Dv, z, h0, softplus, K, False)
    return out, last


def _selective_scan_fwd(u, delta, bias, A, Bm, Cm, Dv, z, h0, softplus, K):
    out, last, ckpt = _ss_forward(u, delta, bias, A, Bm, Cm, Dv, z, h0, softplus, K, True)
    return (out, last), (u, delta, bias, A, Bm, Cm, Dv, z, h0, ckpt)


def _selective_scan_bwd(softplus, K, res, cotangents):
    u, delta, bias, A, Bm, Cm, Dv, z, h0, ckpt = res
    dout, dlast = cotangents
    batch, channels, length = u.shape
    groups, state = Bm.shape[1], Bm.shape[2]
    meta = _ss_meta(u, Bm, softplus, K)
    S = int(meta["splits"])
    dt = u.dtype
    shapes = (u.shape, u.shape, z.shape, (batch, channels, state), (batch, groups, S, state, length),
              (batch, groups, S, state, length), (batch, channels), (batch, channels), (batch, channels, state))
    call = jax.ffi.ffi_call("hybridc_ss_backward", tuple(_sds(s, dt) for s in shapes), vmap_method="sequential")
    du, ddelta, dz, dA_p, dB_p, dC_p, dD_p, dbias_p, dh0 = call(
        u, delta, bias, A, Bm, Cm, Dv, z, ckpt, dout.astype(dt), dlast.astype(dt), **meta)
    dbias = dbias_p.sum(0) if bias.size else jnp.zeros_like(bias)
    dD = dD_p.sum(0) if Dv.size else jnp.zeros_like(Dv)
    dh0 = dh0 if h0.size else jnp.zeros_like(h0)
    return du, ddelta, dbias, dA_p.sum(0), dB_p.sum(2), dC_p.sum(2), dD, dz, dh0


_selective_scan.defvjp(_selective_scan_fwd, _selective_scan_bwd)


def selective_scan_cpp(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       initial_state=None, *, checkpoint_every=None):
    """Same contract as `selective_scan.reference`; requires `load()` to have succeeded. One fused kernel call:
    dt = softplus(delta + bias), the scan, + D u and the silu(z) gate; fused backward, which recomputes from states
    stored every `checkpoint_every` steps (default CHECKPOINT_EVERY).

    Returns (out (B, D, L) in u.dtype, last_state (B, D, N) in the accumulation dtype).
    """
    acc = _acc(u.dtype)
    batch, channels, length = u.shape
    if length == 0:  # nothing to scan: the state passes through
        h0 = jnp.zeros((batch, channels, A.shape[-1]), acc) if initial_state is None else initial_state.astype(acc)
        return jnp.zeros(u.shape, u.dtype), h0
    opt = lambda t: _none(acc) if t is None else t.astype(acc)  # noqa: E731
    Bm, Cm = ((M[:, None] if M.ndim == 3 else M).astype(acc) for M in (B, C))  # (B, G, N, L)
    out, last = _selective_scan(u.astype(acc), delta.astype(acc), opt(delta_bias), A.astype(acc), Bm, Cm, opt(D),
                                opt(z), opt(initial_state), bool(delta_softplus),
                                int(checkpoint_every or CHECKPOINT_EVERY))
    return out.astype(u.dtype), last


@jax.custom_vjp
def _linear_recurrence(a, x, h0):
    call = jax.ffi.ffi_call("hybridc_lr_forward", _sds(x.shape, x.dtype), vmap_method="sequential")
    return call(a, x, h0, nthreads=np.int64(_threads()))


def _linear_recurrence_fwd(a, x, h0):
    h = _linear_recurrence(a, x, h0)
    return h, (a, h, h0)


def _linear_recurrence_bwd(res, dh):
    a, h, h0 = res
    call = jax.ffi.ffi_call("hybridc_lr_backward", (_sds(a.shape, a.dtype), _sds(h.shape, h.dtype),
                                                    _sds(h0.shape, h0.dtype)), vmap_method="sequential")
    return call(a, h, h0, dh.astype(h.dtype), nthreads=np.int64(_threads()))


_linear_recurrence.defvjp(_linear_recurrence_fwd, _linear_recurrence_bwd)


def linear_recurrence_cpp(a, x, initial_state=None):
    """Same contract as `linear_recurrence.reference`: (h (B, L, W) in x.dtype, h_last (B, W) accumulation dtype)."""
    acc = _acc(x.dtype)
    batch, length, width = x.shape
    h0 = _none(acc) if initial_state is None else initial_state.astype(acc)
    h = _linear_recurrence(a.astype(acc), x.astype(acc), h0)
    if length == 0:
        last = h0 if initial_state is not None else jnp.zeros((batch, width), acc)
    else:
        last = h[:, -1]
    return h.astype(x.dtype), last


def _dr_forward(q, k, v, g, beta, h0, scale, with_ckpt):
    B, T, H, K = q.shape
    V = v.shape[-1]
    CK = DELTA_CHECKPOINT_EVERY
    ckpt_shape = (B, H, -(-T // CK), K, V) if with_ckpt else (0,)
    call = jax.ffi.ffi_call("hybridc_dr_forward", (_sds((B, T, H, V), q.dtype), _sds((B, H, K, V), q.dtype),
                                                   _sds(ckpt_shape, q.dtype)), vmap_method="sequential")
    return call(q, k, v, g, beta, h0, checkpoint_every=np.int64(CK), scale=np.float64(scale),
                nthreads=np.int64(_threads()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _delta_rule(q, k, v, g, beta, h0, scale):
    out, last, _ = _dr_forward(q, k, v, g, beta, h0, scale, False)
    return out, last


def _delta_rule_fwd(q, k, v, g, beta, h0, scale):
    out, last, ckpt = _dr_forward(q, k, v, g, beta, h0, scale, True)
    return (out, last), (q, k, v, g, beta, h0, ckpt)


def _delta_rule_bwd(scale, res, cotangents):
    q, k, v, g, beta, h0, ckpt = res
    dout, dlast = cotangents
    dt = q.dtype
    shapes = (q.shape, k.shape, v.shape, g.shape, beta.shape, h0.shape)
    call = jax.ffi.ffi_call("hybridc_dr_backward", tuple(_sds(s, dt) for s in shapes), vmap_method="sequential")
    return call(q, k, v, g, beta, ckpt, dout.astype(dt), dlast.astype(dt),
                checkpoint_every=np.int64(DELTA_CHECKPOINT_EVERY), scale=np.float64(scale),
                nthreads=np.int64(_threads()))


_delta_rule.defvjp(_delta_rule_fwd, _delta_rule_bwd)


def delta_rule_cpp(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """The (gated, when g is given) delta rule by the fused sequential C++ kernel; the references' contract:
    returns (o (B, T, H, V) in q.dtype, final state (B, H, K, V) in the accumulation dtype, or None)."""
    acc = _acc(q.dtype)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    if T == 0:
        S = jnp.zeros((B, H, K, V), acc) if initial_state is None else initial_state.astype(acc)
        return jnp.zeros((B, 0, H, V), q.dtype), (S if output_final_state else None)
    opt = lambda t: _none(acc) if t is None else t.astype(acc)  # noqa: E731
    o, S = _delta_rule(q.astype(acc), k.astype(acc), v.astype(acc), opt(g), beta.astype(acc), opt(initial_state),
                       float(scale))
    return o.astype(q.dtype), (S if output_final_state else None)
