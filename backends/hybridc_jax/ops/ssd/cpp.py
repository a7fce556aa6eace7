"""SSD, the fused C++ CPU kernel as an XLA custom call (``impl="cpp"``; what ``auto`` runs on CPU when it builds).

The kernel torch runs through ctypes (``hybridc_native/csrc/ssd.cpp``), called with ``jax.ffi.ffi_call`` on XLA's
buffers (the library: ``.._ffi_library``). The forward optionally stores the state every K steps; the backward
(``jax.custom_vjp``) is the kernel's fused reverse scan, recomputing each span of K steps from its checkpoint.
Work split: each (batch, head) runs `hybridc_native.scan_splits` tasks over ranges of lane blocks of the head dim;
the partial dB, dC, d dt and dA of the tasks (and of the heads sharing a group) are summed here. ``z`` (the optional
silu gate) is applied here. Mirrors hybridc_torch/ops/ssd/cpp.py.

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups of B/C (H % G == 0)    N: state size
    S: tasks per (batch, head)    K: checkpoint interval
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import hybridc_native as native

from .._ffi_library import absent, acc_dtype, load, require, sds, threads
from .._reduce import sum_axis

__all__ = ["ssd_cpp", "CHECKPOINT_EVERY"]

CHECKPOINT_EVERY = 64  # K: the forward stores the state every K steps for the backward's recomputation


def _meta(x, softplus, K):
    batch, _, heads, head_dim = x.shape
    block = load().hybridc_ssd_block(0 if x.dtype == jnp.float32 else 1, head_dim)
    n_threads = threads()
    S = native.scan_splits(batch, heads, -(-head_dim // block), n_threads)
    return block, dict(softplus=np.int64(softplus), splits=np.int64(S), checkpoint_every=np.int64(K),
                       nthreads=np.int64(n_threads))


def _forward(x, dt, bias, A, Bm, Cm, Dv, h0, softplus, K, with_ckpt):
    batch, length, heads, head_dim = x.shape
    state = Bm.shape[3]
    block, meta = _meta(x, softplus, K)
    ckpt_shape = (batch, heads, -(-length // K), state, -(-head_dim // block) * block) if with_ckpt else (0,)
    outs = (sds(x.shape, x.dtype), sds((batch, heads, head_dim, state), x.dtype), sds(ckpt_shape, x.dtype))
    call = jax.ffi.ffi_call("hybridc_ssd_forward", outs, vmap_method="sequential")
    return call(x, dt, bias, A, Bm, Cm, Dv, h0, **meta)


@functools.partial(jax.custom_vjp, nondiff_argnums=(8, 9))
def _ssd(x, dt, bias, A, Bm, Cm, Dv, h0, softplus, K):
    y, last, _ = _forward(x, dt, bias, A, Bm, Cm, Dv, h0, softplus, K, False)
    return y, last


def _ssd_fwd(x, dt, bias, A, Bm, Cm, Dv, h0, softplus, K):
    y, last, ckpt = _forward(x, dt, bias, A, Bm, Cm, Dv, h0, softplus, K, True)
    return (y, last), (x, dt, bias, A, Bm, Cm, Dv, h0, ckpt)


def _ssd_bwd(softplus, K, res, cotangents):
    x, dt, bias, A, Bm, Cm, Dv, h0, ckpt = res
    dy, dlast = cotangents
    batch, length, heads, head_dim = x.shape
    groups, state = Bm.shape[2], Bm.shape[3]
    _, meta = _meta(x, softplus, K)
    S = int(meta["splits"])
    shapes = (x.shape, (batch, heads, S, length), (batch, heads, S), (batch, heads, S, length, state),
              (batch, heads, S, length, state), (batch, heads, head_dim), h0.shape)
    call = jax.ffi.ffi_call("hybridc_ssd_backward", tuple(sds(s, x.dtype) for s in shapes), vmap_method="sequential")
    dx, ddt_p, dA_p, dB_p, dC_p, dD_p, dh0 = call(x, dt, bias, A, Bm, Cm, Dv, ckpt, dy.astype(x.dtype),
                                                  dlast.astype(x.dtype), **meta)
    ddt = sum_axis(ddt_p, 2).transpose(0, 2, 1)  # (B, L, H)

    def per_group(part):  # (B, H, S, L, N) -> (B, L, G, N): heads of a group share B and C
        return sum_axis(part.reshape(batch, groups, -1, length, state), 2).transpose(0, 2, 1, 3)  # (XLA's sum: slow)

    dbias = ddt.sum((0, 1)) if bias.size else jnp.zeros_like(bias)
    dD = dD_p.sum(0) if Dv.size else jnp.zeros_like(Dv)
    return dx, ddt, dbias, dA_p.sum((0, 2)), per_group(dB_p), per_group(dC_p), dD, dh0


_ssd.defvjp(_ssd_fwd, _ssd_bwd)


def ssd_cpp(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False, *,
            checkpoint_every=None):
    """SSD by the fused C++ kernel (CPU; `chunk_size` is ignored); `naive.reference`'s contract: returns
    (y (B, L, H, P) in x.dtype, final_states (B, H, P, N) in the accumulation dtype). RuntimeError if the kernel
    cannot be built here.

    x (B, L, H, P); dt (B, L, H); A (H,); B, C (B, L, G, N); D (H,) or (H, P); z (B, L, H, P); dt_bias (H,);
    initial_states (B, H, P, N).
    """
    require("the C++ SSD kernel could not be built here; use impl='chunk'")
    acc = acc_dtype(x.dtype)
    batch, length, heads, head_dim = x.shape
    if length == 0:  # nothing to scan: the state passes through
        S0 = jnp.zeros((batch, heads, head_dim, B.shape[-1]), acc) if initial_states is None else \
            initial_states.astype(acc)
        return jnp.zeros(x.shape, x.dtype), S0
    opt = lambda t: absent(acc) if t is None else t.astype(acc)  # noqa: E731
    Dv = absent(acc) if D is None else jnp.broadcast_to((D[:, None] if D.ndim == 1 else D).astype(acc),
                                                         (heads, head_dim))
    y, final = _ssd(x.astype(acc), dt.astype(acc), opt(dt_bias), A.astype(acc), B.astype(acc), C.astype(acc), Dv,
                    opt(initial_states), bool(dt_softplus), int(checkpoint_every or CHECKPOINT_EVERY))
    if z is not None:
        y = y * jax.nn.silu(z.astype(acc))
    return y.astype(x.dtype), final
