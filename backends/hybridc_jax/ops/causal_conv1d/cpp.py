"""The causal depthwise conv1d (+ bias, + optional silu), the fused C++ CPU kernel as an XLA custom call
(``impl="cpp"``; what ``auto`` runs on CPU when it builds).

The kernel torch runs through ctypes (``hybridc_native/csrc/causal_conv1d.cpp``), called with ``jax.ffi.ffi_call``
on XLA's buffers (the library: ``.._ffi_library``); the backward (``jax.custom_vjp``) is the kernel's one-pass
backward (recomputing the pre-activation). The per-task dweight / dbias partials are summed here. Mirrors
hybridc_torch/ops/causal_conv1d/cpp.py.

Glossary of dimension letters:
    B: batch    L: sequence length    C: channels    K: conv width    T: backward tasks
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .._ffi_library import absent, acc_dtype, load, require, sds, threads
from .naive import new_state, reference

__all__ = ["causal_conv1d_cpp"]


def _attrs(silu):
    return dict(silu=np.int64(silu), nthreads=np.int64(threads()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _conv(x, w, bias, h0, silu):
    call = jax.ffi.ffi_call("hybridc_conv_forward", sds(x.shape, x.dtype), vmap_method="sequential")
    return call(x, w, bias, h0, **_attrs(silu))


def _conv_fwd(x, w, bias, h0, silu):
    return _conv(x, w, bias, h0, silu), (x, w, bias, h0)


def _conv_bwd(silu, res, dy):
    x, w, bias, h0 = res
    batch, length, channels = x.shape
    K = w.shape[1]
    tasks = batch * -(-length // load().hybridc_conv_rows())
    outs = (sds(x.shape, x.dtype), sds((tasks, K + 1, channels), x.dtype), sds(h0.shape, x.dtype))
    call = jax.ffi.ffi_call("hybridc_conv_backward", outs, vmap_method="sequential")
    dx, part, dh0 = call(x, w, bias, h0, dy.astype(x.dtype), **_attrs(silu))
    part = part.sum(0)  # (K + 1, C): dw^T, dbias
    dbias = part[K] if bias.size else jnp.zeros_like(bias)
    return dx, part[:K].T, dbias, dh0


_conv.defvjp(_conv_fwd, _conv_bwd)


def causal_conv1d_cpp(x, weight, bias=None, conv_state=None, activation=None):
    """`naive.reference`'s contract by the fused kernel (CPU). Widths past the kernel's limit run the reference.
    RuntimeError if the kernel cannot be built here."""
    require("the C++ conv kernel could not be built here; use impl='reference'")
    K = weight.shape[-1]
    if K > load().hybridc_conv_kmax() or x.shape[1] == 0:
        return reference(x, weight, bias, conv_state, activation)
    acc = acc_dtype(x.dtype)
    opt = lambda t: absent(acc) if t is None else t.astype(acc)  # noqa: E731
    y = _conv(x.astype(acc), weight.astype(acc), opt(bias), opt(conv_state), activation == "silu")
    return y.astype(x.dtype), new_state(x, conv_state, K)
