"""The gated group RMSNorm, the fused C++ CPU kernel as an XLA custom call (``impl="cpp"``; what ``auto`` runs on
CPU when it builds).

The kernel torch runs through ctypes (``hybridc_native/csrc/rms_norm_gated.cpp``), called with ``jax.ffi.ffi_call``
on XLA's buffers; the backward (``jax.custom_vjp``) is the kernel's one-pass backward; the per-task dweight partials
are summed here. Mirrors hybridc_torch/ops/rms_norm_gated/cpp.py.

Glossary of dimension letters:
    R: rows (all leading dims)    E: channels    S: tasks (ranges of rows)
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .._ffi_library import absent, acc_dtype, require, sds, threads

__all__ = ["rms_norm_gated_cpp"]


def _attrs(rows, mode, group_size, eps):
    n = threads()
    return dict(mode=np.int64(mode), group_size=np.int64(group_size), eps=np.float64(eps),
                splits=np.int64(max(1, min(rows, 8 * n))), nthreads=np.int64(n))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _norm(y, z, w, mode, group_size, eps):
    call = jax.ffi.ffi_call("hybridc_gnorm_forward", sds(y.shape, y.dtype), vmap_method="sequential")
    return call(y, z, w, **_attrs(y.shape[0], mode, group_size, eps))


def _norm_fwd(y, z, w, mode, group_size, eps):
    return _norm(y, z, w, mode, group_size, eps), (y, z, w)


def _norm_bwd(mode, group_size, eps, res, dout):
    y, z, w = res
    attrs = _attrs(y.shape[0], mode, group_size, eps)
    part = (int(attrs["splits"]), y.shape[1]) if mode else (0,)
    call = jax.ffi.ffi_call("hybridc_gnorm_backward", (sds(y.shape, y.dtype), sds(y.shape, y.dtype),
                                                       sds(part, y.dtype)), vmap_method="sequential")
    dy, dz, dw_part = call(y, z, w, dout.astype(y.dtype), **attrs)
    return dy, dz, dw_part.sum(0) if mode else jnp.zeros_like(w)


_norm.defvjp(_norm_fwd, _norm_bwd)


def rms_norm_gated_cpp(y, z, weight, group_size: int, eps: float, norm_before_gate: bool = False):
    """`naive.reference`'s contract by the fused kernel (CPU). RuntimeError if the kernel cannot be built here."""
    require("the C++ norm kernel could not be built here; use impl='reference'")
    acc = acc_dtype(y.dtype)
    shape = y.shape
    if y.size == 0:
        return jnp.zeros(shape, y.dtype)
    mode = 0 if weight is None else 2 if norm_before_gate else 1
    w = absent(acc) if weight is None else weight.astype(acc)
    out = _norm(y.astype(acc).reshape(-1, shape[-1]), z.astype(acc).reshape(-1, shape[-1]), w, mode,
                int(group_size if weight is not None else shape[-1]), float(eps))
    return out.reshape(shape).astype(y.dtype)
