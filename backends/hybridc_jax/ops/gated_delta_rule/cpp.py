"""The gated delta rule, the fused sequential C++ CPU kernel as an XLA custom call (``impl="cpp"``; ``auto`` on CPU).

The kernel torch runs through ctypes (``hybridc_native/csrc``), called with ``jax.ffi.ffi_call`` on XLA's buffers
(the library: ``.._ffi_library``): B4 L1024, forward+backward ~1.7x faster than torch's chunked form. The forward
stores the state every CHECKPOINT_EVERY steps when differentiated; the backward (``jax.custom_vjp``) recomputes each
span from its checkpoint and walks it in reverse. With no gate (g None, a zero-size operand) it is the plain delta
rule, which ``delta_rule/cpp.py`` reuses.

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .._ffi_library import absent, acc_dtype, require, sds, threads

__all__ = ["gated_delta_rule_cpp", "CHECKPOINT_EVERY"]

CHECKPOINT_EVERY = 16  # the backward recomputes chunks of this many steps


def _dr_forward(q, k, v, g, beta, h0, scale, with_ckpt):
    B, T, H, K = q.shape
    V = v.shape[-1]
    CK = CHECKPOINT_EVERY
    ckpt_shape = (B, H, -(-T // CK), K, V) if with_ckpt else (0,)
    call = jax.ffi.ffi_call("hybridc_dr_forward", (sds((B, T, H, V), q.dtype), sds((B, H, K, V), q.dtype),
                                                   sds(ckpt_shape, q.dtype)), vmap_method="sequential")
    return call(q, k, v, g, beta, h0, checkpoint_every=np.int64(CK), scale=np.float64(scale),
                nthreads=np.int64(threads()))


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
    call = jax.ffi.ffi_call("hybridc_dr_backward", tuple(sds(s, dt) for s in shapes), vmap_method="sequential")
    return call(q, k, v, g, beta, ckpt, dout.astype(dt), dlast.astype(dt),
                checkpoint_every=np.int64(CHECKPOINT_EVERY), scale=np.float64(scale),
                nthreads=np.int64(threads()))


_delta_rule.defvjp(_delta_rule_fwd, _delta_rule_bwd)


def gated_delta_rule_cpp(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                         chunk_size=None):
    """The (gated, when g is given) delta rule by the fused sequential C++ kernel; the references' contract:
    returns (o (B, T, H, V) in q.dtype, final state (B, H, K, V) in the accumulation dtype, or None).
    `chunk_size` is ignored; g None runs the plain delta rule. CPU only; compiled on first use."""
    require("the C++ CPU kernels could not be built here; use impl='scan_chunk'")
    acc = acc_dtype(q.dtype)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    if T == 0:
        S = jnp.zeros((B, H, K, V), acc) if initial_state is None else initial_state.astype(acc)
        return jnp.zeros((B, 0, H, V), q.dtype), (S if output_final_state else None)
    opt = lambda t: absent(acc) if t is None else t.astype(acc)  # noqa: E731
    o, S = _delta_rule(q.astype(acc), k.astype(acc), v.astype(acc), opt(g), beta.astype(acc), opt(initial_state),
                       float(scale))
    return o.astype(q.dtype), (S if output_final_state else None)
