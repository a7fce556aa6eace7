"""The delta rule recurrence (DeltaNet), in JAX.

Paper: Schlag et al., "Linear Transformers Are Secretly Fast Weight Programmers" (2021, arXiv:2102.11174);
Yang et al., "Parallelizing Linear Transformers with the Delta Rule over Sequence Length" (2024, arXiv:2406.06484).
Reference implementation: flash-linear-attention, ``fla.ops.delta_rule`` (``chunk_delta_rule`` signature and
[B, T, H, K] layout; ``fla/ops/delta_rule/naive.py::delta_rule_recurrence`` for the math). Mirrors
hybridc_torch/kernels/delta_rule.py: the reference is a ``lax.scan`` over time; the fast form (``impl="chunk"``) is the
chunked WY / UT-transform form shared with the gated delta rule (``chunk_delta_core``, no decay). ``auto`` picks
``impl="scan_chunk"``: the reference's forward when not differentiated, the chunked form under ``jax.grad``.

Per head, with state S (K, V) and one step t:
    u_t = beta_t * (v_t - S_{t-1}^T k_t)            # (V,)
    S_t = S_{t-1} + k_t u_t^T                        # (K, V)
    o_t = S_t^T (scale * q_t)                        # (V,)
No internal L2 normalisation: the caller normalises q and k.

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._dispatch import choose
from .gated_delta_rule import _auto as gated_auto
from .gated_delta_rule import chunk_delta_core, scan_forward_chunk_backward
from .gated_delta_rule import cpp as gated_cpp

__all__ = ["delta_rule", "delta_rule_step", "reference", "chunk_delta_rule", "scan_chunk_delta_rule"]


def _acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: at least fp32 (fp64 inputs stay fp64)."""
    return jnp.promote_types(dtype, jnp.float32)


def delta_rule_step(q_t, k_t, v_t, beta_t, state, scale=None):
    """One recurrence step. q_t, k_t (B, H, K); v_t (B, H, V); beta_t (B, H); state (B, H, K, V).

    Returns (o_t (B, H, V) in q_t's dtype, new state (B, H, K, V) in the accumulation dtype).
    """
    acc = _acc_dtype(q_t.dtype)
    scale = q_t.shape[-1] ** -0.5 if scale is None else scale
    q, k, v, beta = (t.astype(acc) for t in (q_t, k_t, v_t, beta_t))
    S = state.astype(acc)                                               # (B, H, K, V)
    u = beta[..., None] * (v - jnp.einsum("bhk,bhkv->bhv", k, S))       # (B, H, V)
    S = S + k[..., :, None] * u[..., None, :]                           # (B, H, K, V)
    o = jnp.einsum("bhk,bhkv->bhv", q * scale, S)                       # (B, H, V)
    return o.astype(q_t.dtype), S


def reference(q, k, v, beta, scale=None, initial_state=None, output_final_state=False):
    """Sequential oracle: ``lax.scan`` over time with fp32 (or wider) state accumulation."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    acc = _acc_dtype(q.dtype)
    if initial_state is None:
        S = jnp.zeros((B, H, K, V), acc)                                # (B, H, K, V)
    else:
        S = initial_state.astype(acc)                                   # (B, H, K, V)

    def cell(S, xs):
        o_t, S = delta_rule_step(*xs, S, scale)                         # (B, H, V)
        return S, o_t

    S, o = lax.scan(cell, S, tuple(jnp.moveaxis(t, 1, 0) for t in (q, k, v, beta)))   # (T, B, H, V)
    return jnp.moveaxis(o, 0, 1).astype(q.dtype), (S if output_final_state else None)  # (B, T, H, V)


def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=64):
    """Chunked delta rule (WY / UT-transform form, chunk 64 by default); same contract as ``reference``.

    Shares its core with the gated delta rule (``gated_delta_rule.chunk_delta_core`` with no decay).
    """
    return chunk_delta_core(q, k, v, None, beta, scale, initial_state, output_final_state, chunk_size)


def scan_chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                          chunk_size=64):
    """Values from the ``lax.scan`` reference, gradients from the chunked form (see
    ``gated_delta_rule.scan_forward_chunk_backward``)."""
    return scan_forward_chunk_backward(
        lambda *a: reference(*a[:4], scale, a[4], output_final_state),
        lambda *a: chunk_delta_core(*a[:3], None, a[3], scale, a[4], output_final_state, chunk_size),
        q, k, v, beta, initial_state)


def cpp(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=None):
    """The gated delta rule's C++ custom call with no gate (``gated_delta_rule.cpp``; CPU; `chunk_size` ignored)."""
    return gated_cpp(q, k, v, None, beta, scale, initial_state, output_final_state)


_IMPLS = {"reference": reference, "chunk": chunk_delta_rule, "scan_chunk": scan_chunk_delta_rule, "cpp": cpp}
_auto = gated_auto  # the same choice as the gated delta rule: "cpp" on CPU when it builds, else "scan_chunk"


def _pick(impl: str):
    return choose("delta_rule", _IMPLS, impl, _auto(jax.default_backend()))


def delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, *, impl="auto",
               chunk_size=None):
    """Delta rule over a sequence, as fla's ``chunk_delta_rule`` (without in-kernel l2norm).

    q, k (B, T, H, K); v (B, T, H, V); beta (B, T, H); scale defaults to K**-0.5;
    initial_state (B, H, K, V) or None. Returns (o (B, T, H, V), final_state (B, H, K, V) or None).
    impl: "auto" (CPU: "cpp", else "scan_chunk": scan forward, chunked backward), "reference", "chunk",
    "scan_chunk" or "cpp"; chunk_size (None = the impl's default) is ignored by the reference and "cpp".
    """
    fn = _pick(impl)
    extra = {} if chunk_size is None or fn is reference else {"chunk_size": chunk_size}
    return fn(q, k, v, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              **extra)
