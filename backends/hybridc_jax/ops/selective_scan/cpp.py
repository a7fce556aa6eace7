"""Selective scan, the fused C++ CPU kernel as an XLA custom call (``impl="cpp"``; what ``auto`` runs on CPU).

The kernel torch runs through ctypes (``hybridc_native/csrc``), called with ``jax.ffi.ffi_call`` on XLA's buffers
(the library: ``.._ffi_library``): 0.94x torch's time forward, B4 L1024 D512 N16. The forward optionally stores the
state every K steps; the backward (``jax.custom_vjp``) is the kernel's fused reverse scan, recomputing each span of K
steps from its checkpoint. Work split: each (batch, group) runs `hybridc_native.scan_splits` tasks over ranges of
channel blocks; the dB / dC partials of the tasks are summed here.

Glossary of dimension letters:
    B: batch    D: channels (d_inner)    L: sequence length    N: state size    G: groups of B/C (D % G == 0)
    S: tasks per (batch, group)    K: checkpoint interval
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import hybridc_native as native

from .._ffi_library import absent, acc_dtype, load, require, sds, threads
from .._reduce import sum_axis

__all__ = ["selective_scan_cpp", "CHECKPOINT_EVERY"]

CHECKPOINT_EVERY = 64  # K: the forward stores the state every K steps for the backward's recomputation


def _ss_meta(u, Bm, softplus, K):
    batch, channels, _ = u.shape
    groups = Bm.shape[1]
    lanes = load().hybridc_ss_lanes(0 if u.dtype == jnp.float32 else 1)
    n_threads = threads()
    S = native.scan_splits(batch, groups, -(-(channels // groups) // lanes), n_threads)
    return dict(softplus=np.int64(softplus), splits=np.int64(S), checkpoint_every=np.int64(K),
                nthreads=np.int64(n_threads))


def _ss_forward(u, delta, bias, A, Bm, Cm, Dv, z, h0, softplus, K, with_ckpt):
    batch, channels, length = u.shape
    state = Bm.shape[2]
    meta = _ss_meta(u, Bm, softplus, K)
    nK = -(-length // K)
    ckpt_shape = (batch, channels, nK, state) if with_ckpt else (0,)
    call = jax.ffi.ffi_call("hybridc_ss_forward",
                            (sds(u.shape, u.dtype), sds((batch, channels, state), u.dtype), sds(ckpt_shape, u.dtype)),
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
    call = jax.ffi.ffi_call("hybridc_ss_backward", tuple(sds(s, dt) for s in shapes), vmap_method="sequential")
    du, ddelta, dz, dA_p, dB_p, dC_p, dD_p, dbias_p, dh0 = call(
        u, delta, bias, A, Bm, Cm, Dv, z, ckpt, dout.astype(dt), dlast.astype(dt), **meta)
    dbias = dbias_p.sum(0) if bias.size else jnp.zeros_like(bias)
    dD = dD_p.sum(0) if Dv.size else jnp.zeros_like(Dv)
    dh0 = dh0 if h0.size else jnp.zeros_like(h0)
    return du, ddelta, dbias, dA_p.sum(0), sum_axis(dB_p, 2), sum_axis(dC_p, 2), dD, dz, dh0  # (XLA's sum: slow)


_selective_scan.defvjp(_selective_scan_fwd, _selective_scan_bwd)


def selective_scan_cpp(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       initial_state=None, *, checkpoint_every=None):
    """Same contract as `naive.reference`: one fused kernel call (dt = softplus(delta + bias), the scan, + D u and
    the silu(z) gate); fused backward, which recomputes from states stored every `checkpoint_every` steps (default
    CHECKPOINT_EVERY). CPU only; compiled on first use (RuntimeError if it cannot be built here).

    Returns (out (B, D, L) in u.dtype, last_state (B, D, N) in the accumulation dtype).
    """
    require("the C++ selective scan kernel could not be built here; use impl='chunk'")
    acc = acc_dtype(u.dtype)
    batch, channels, length = u.shape
    if length == 0:  # nothing to scan: the state passes through
        h0 = jnp.zeros((batch, channels, A.shape[-1]), acc) if initial_state is None else initial_state.astype(acc)
        return jnp.zeros(u.shape, u.dtype), h0
    opt = lambda t: absent(acc) if t is None else t.astype(acc)  # noqa: E731
    Bm, Cm = ((M[:, None] if M.ndim == 3 else M).astype(acc) for M in (B, C))  # (B, G, N, L)
    out, last = _selective_scan(u.astype(acc), delta.astype(acc), opt(delta_bias), A.astype(acc), Bm, Cm, opt(D),
                                opt(z), opt(initial_state), bool(delta_softplus),
                                int(checkpoint_every or CHECKPOINT_EVERY))
    return out.astype(u.dtype), last
