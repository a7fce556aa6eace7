"""RWKV-7's generalized delta rule (diagonal-plus-low-rank state transition), in JAX.

Paper: Peng et al., "RWKV-7 "Goose" with Expressive Dynamic State Evolution" (2025, arXiv:2503.14456).
Reference implementation: flash-linear-attention, ``fla.ops.rwkv7`` (``chunk_rwkv7`` / ``fused_recurrent_rwkv7``
signature, [B, T, H, K] layout, state stored (K, V)) and ``fla/ops/generalized_delta_rule/dplr/naive.py``
(``dplr_recurrence``) for the math. Mirrors hybridc_torch/kernels/rwkv7.py: the reference is a ``lax.scan`` over
time; the fast form (``impl="chunk"``) is the chunked form ``chunk_rwkv7`` (chunk 16, an exact pairwise fallback past
the fp32 overflow bound), with ``lax.scan`` over chunks and ``jax.grad`` through it. ``auto`` picks
``impl="scan_chunk"``: the reference's forward when not differentiated, the chunked form under ``jax.grad``.

Per head, with state S (K, V), log decay w_t (K,) and one step t (a^T S uses the state *before* the decay):
    S_t = exp(w_t)[:, None] * S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T      # (K, V)
    o_t = S_t^T (scale * r_t)                                                 # (V,)
(In RWKV's own (V, K) layout this reads S = S diag(exp(w)) + (S a) b^T + v k^T.)  RWKV-7 uses a = -kk, b = kk * a_gate.

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/receptance head dim, V value head dim.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from ._dispatch import choose
from .gated_delta_rule import (_chunk_layout, _unchunk, pass_states, scan_forward_chunk_backward,
                               unit_lower_inverse)

__all__ = ["rwkv7", "rwkv7_step", "reference", "chunk_rwkv7", "scan_chunk_rwkv7"]


def _acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: at least fp32 (fp64 inputs stay fp64)."""
    return jnp.promote_types(dtype, jnp.float32)


def rwkv7_step(r_t, w_t, k_t, v_t, a_t, b_t, state, scale=1.0):
    """One recurrence step. r_t, w_t, k_t, a_t, b_t (B, H, K); v_t (B, H, V); state (B, H, K, V).

    scale None means K**-0.5. Returns (o_t (B, H, V) in r_t's dtype, new state in the accumulation dtype).
    """
    acc = _acc_dtype(r_t.dtype)
    scale = r_t.shape[-1] ** -0.5 if scale is None else scale
    r, w, k, v, a, b = (t.astype(acc) for t in (r_t, w_t, k_t, v_t, a_t, b_t))
    S = state.astype(acc)                                               # (B, H, K, V)
    sa = jnp.einsum("bhk,bhkv->bhv", a, S)                              # (B, H, V)
    S = jnp.exp(w)[..., None] * S + b[..., :, None] * sa[..., None, :]  # (B, H, K, V)
    S = S + k[..., :, None] * v[..., None, :]                           # (B, H, K, V)
    o = jnp.einsum("bhk,bhkv->bhv", r * scale, S)                       # (B, H, V)
    return o.astype(r_t.dtype), S


def reference(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False):
    """Sequential oracle: ``lax.scan`` over time with fp32 (or wider) state accumulation."""
    B, T, H, K = r.shape
    V = v.shape[-1]
    acc = _acc_dtype(r.dtype)
    if initial_state is None:
        S = jnp.zeros((B, H, K, V), acc)                                # (B, H, K, V)
    else:
        S = initial_state.astype(acc)                                   # (B, H, K, V)

    def cell(S, xs):
        o_t, S = rwkv7_step(*xs, S, scale)                              # (B, H, V)
        return S, o_t

    S, o = lax.scan(cell, S, tuple(jnp.moveaxis(t, 1, 0) for t in (r, w, k, v, a, b)))   # (T, B, H, V)
    return jnp.moveaxis(o, 0, 1).astype(r.dtype), (S if output_final_state else None)     # (B, T, H, V)


# The factorised intra-chunk scores multiply exp(G_i) by exp(-G_j) (G the in-chunk cumulative log decay, <= 0 for
# decays): safe while |G| stays well inside the dtype's exponent range (fp32 overflows at exp(88.7)). RWKV-7's decays
# (w > -0.607 per step) reach at most ~9.7 over a 16-step chunk. Past the bound the exact pairwise form is used.
_FACTOR_BOUND = {jnp.dtype(jnp.float32): 60.0, jnp.dtype(jnp.float64): 600.0}


def _pair_scores(x, y, gx, gy, strict):
    """Exact sum_k x_ik y_jk exp(gx_ik - gy_jk) for j < i (strict) or j <= i, zero elsewhere: (..., C, C).

    Takes the exponent differences pairwise, (..., C, C, K), so nothing overflows for any decay (more memory).
    """
    C = x.shape[-2]
    keep = jnp.tril(jnp.ones((C, C), bool), -1 if strict else 0)[..., None]   # (C, C, 1)
    diff = jnp.where(keep, gx[..., :, None, :] - gy[..., None, :, :], 0.0)
    return (x[..., :, None, :] * y[..., None, :, :] * jnp.where(keep, jnp.exp(diff), 0.0)).sum(-1)


def _factorised(a, b, k, r, G, Gp, bound):
    """The scores as one batched matmul of (a e^{G_{i-1}} | r e^{G_i}) by (b e^{-G_j} | k e^{-G_j}).

    G is clamped to [-bound, ...] so that this stays finite (and NaN-free) where it is evaluated but not selected.
    """
    C = G.shape[-2]
    Gc, Gpc = jnp.maximum(G, -bound), jnp.maximum(Gp, -bound)
    e_neg = jnp.exp(-Gc)                                                # (..., C, K)
    lhs = jnp.concatenate([a * jnp.exp(Gpc), r * jnp.exp(Gc)], axis=-2)    # (..., 2C, K)
    rhs = jnp.concatenate([b * e_neg, k * e_neg], axis=-2)              # (..., 2C, K)
    sc = lhs @ jnp.swapaxes(rhs, -1, -2)                                # (..., 2C, 2C)
    return (jnp.tril(sc[..., :C, :C], -1), jnp.tril(sc[..., :C, C:], -1),
            jnp.tril(sc[..., C:, :C]), jnp.tril(sc[..., C:, C:]))


def _pairwise(a, b, k, r, G, Gp):
    """The scores with exact pairwise exponent differences (any decay; (..., C, C, K) intermediates)."""
    return (_pair_scores(a, b, Gp, G, True), _pair_scores(a, k, Gp, G, True),
            _pair_scores(r, b, G, G, False), _pair_scores(r, k, G, G, False))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _scores(a, b, k, r, G, Gp, bound):
    """The four intra-chunk score matrices (m_ab, m_ak strictly lower; m_rb, m_rk lower incl.), each (..., C, C).

    Factorised while max |G| <= bound, else exact pairwise, by ``lax.cond``. A custom VJP takes the same branch in
    the backward (``jax.vjp`` of that branch, recomputed): differentiating ``lax.cond`` directly would make the
    forward emit zero-filled residuals of both branches, the pairwise branch's (..., C, C, K) ones included
    (measured: 2x slower forward+backward). Under vmap both branches run (a select).
    """
    fact = functools.partial(_factorised, bound=bound)
    return lax.cond(jnp.max(jnp.abs(G)) <= bound, fact, _pairwise, a, b, k, r, G, Gp)


def _scores_fwd(a, b, k, r, G, Gp, bound):
    return _scores(a, b, k, r, G, Gp, bound), (a, b, k, r, G, Gp)


def _scores_bwd(bound, res, cotangents):
    def vjp_of(fn):
        return lambda res, ct: jax.vjp(fn, *res)[1](ct)

    fact = functools.partial(_factorised, bound=bound)
    return lax.cond(jnp.max(jnp.abs(res[4])) <= bound, vjp_of(fact), vjp_of(_pairwise), res, cotangents)


_scores.defvjp(_scores_fwd, _scores_bwd)


def chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, chunk_size=16):
    """Chunked generalized (diagonal-plus-low-rank) delta rule; same contract as ``reference``; chunk 16 by default.

    Inside a chunk (G_i = w_1 + ... + w_i per key channel, G_0 = 0; S0 the state entering the chunk), the
    low-rank reads x_i = S_{i-1}^T a_i (V,) solve a unit-triangular system
        x_i = (a_i e^{G_{i-1}})^T S0 + sum_{j<i} (a_i e^{G_{i-1}-G_j}).b_j x_j + (a_i e^{G_{i-1}-G_j}).k_j v_j,
    i.e. X = W S0 + U with W = T (a e^{G_prev}), U = T M_ak v, T = (I - M_ab)^{-1}. Then
        O = (scale r e^{G}) S0 + M_rb X + M_rk v              (pair scores with e^{G_i - G_j}, j <= i)
        S_C = (diag(e^{G_C}) + (b e^{G_C-G})^T W) S0 + (b e^{G_C-G})^T U + (k e^{G_C-G})^T v,
    so the sequential pass (``pass_states``, a ``lax.scan``) is a diagonal-plus-rank-C update of the state and the
    chunk's outputs O per chunk; everything else is batched over chunks (chunk-major layouts). The pair scores
    are factorised matmuls (a e^{G_{i-1}}) . (b e^{-G_j}) while max |G| <= _FACTOR_BOUND (the fp32 overflow bound
    that sets chunk 16), else exact pairwise (`_scores`). ``jax.grad`` differentiates it.
    """
    B, T, H, K = r.shape
    V = v.shape[-1]
    out_dtype, acc = r.dtype, _acc_dtype(r.dtype)
    scale = K ** -0.5 if scale is None else scale
    S = jnp.zeros((B, H, K, V), acc) if initial_state is None else initial_state.astype(acc)   # (B, H, K, V)
    if T == 0:
        return jnp.zeros((B, 0, H, V), out_dtype), (S if output_final_state else None)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    C = min(int(chunk_size), T)
    pad = (-T) % C
    b_t, k_t = (_chunk_layout(t.astype(acc), C, pad, keys_last=True) for t in (b, k))   # (N, B, H, K, C)
    r, w, k, v, a, b = (_chunk_layout(t.astype(acc), C, pad) for t in (r, w, k, v, a, b))   # (N, B, H, C, K|V)
    r = r * scale
    G = jnp.cumsum(w, axis=-2)                                          # (N, B, H, C, K) inclusive
    Gp = G - w                                                          # (N, B, H, C, K) exclusive (G_{i-1})
    a_p = a * jnp.exp(Gp)                                               # a_i e^{G_{i-1}}
    r_g = r * jnp.exp(G)                                                # scale r_i e^{G_i}
    m_ab, m_ak, m_rb, m_rk = _scores(a, b, k, r, G, Gp, _FACTOR_BOUND.get(jnp.dtype(acc), 60.0))
    t_inv = unit_lower_inverse(-m_ab)                                   # (N, B, H, C, C)
    w_s = t_inv @ a_p                                                   # (N, B, H, C, K)   X = w_s S0 + u
    u = t_inv @ (m_ak @ v)                                              # (N, B, H, C, V)
    q_eff = r_g + m_rb @ w_s                                            # (N, B, H, C, K)   O = q_eff S0 + o_c
    o_c = m_rb @ u + m_rk @ v                                           # (N, B, H, C, V)
    to_end = jnp.swapaxes(jnp.exp(G[..., -1:, :] - G), -1, -2)          # (N, B, H, K, C) e^{G_C - G_j}
    b_e, k_e = b_t * to_end, k_t * to_end                               # (N, B, H, K, C)
    decay = jnp.exp(G[..., -1, :])[..., None]                          # (N, B, H, K, 1)
    o, S = pass_states(S, decay, b_e, w_s, b_e @ u + k_e @ v, q_eff, o_c)   # (N, B, H, C, V), (B, H, K, V)
    o = _unchunk(o, T)                                                  # (B, T, H, V), as the reference
    return o.astype(out_dtype), (S if output_final_state else None)


def scan_chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, chunk_size=16):
    """Values from the ``lax.scan`` reference, gradients from the chunked form (see
    ``gated_delta_rule.scan_forward_chunk_backward``)."""
    return scan_forward_chunk_backward(
        lambda *x: reference(*x[:6], scale, x[6], output_final_state),
        lambda *x: chunk_rwkv7(*x[:6], scale, x[6], output_final_state, chunk_size), r, w, k, v, a, b, initial_state)


_IMPLS = {"reference": reference, "chunk": chunk_rwkv7, "scan_chunk": scan_chunk_rwkv7}


def _auto(device: str = "cpu") -> str:
    """The scan forward with the chunked backward on every device for now (GPU-specific choices come later)."""
    return "scan_chunk"


def _pick(impl: str):
    return choose("rwkv7", _IMPLS, impl, _auto(jax.default_backend()))


def rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, *, impl="auto",
          chunk_size=None):
    """RWKV-7 generalized delta rule over a sequence, as fla's ``chunk_rwkv7`` (w = log decay, state (K, V)).

    r, w, k, a, b (B, T, H, K); v (B, T, H, V); scale 1.0 (None means K**-0.5);
    initial_state (B, H, K, V) or None. Returns (o (B, T, H, V), final_state (B, H, K, V) or None).
    impl: "auto" ("scan_chunk": scan forward, chunked backward), "reference", "chunk" or "scan_chunk"; chunk_size
    (None = the impl's default) is ignored by the reference.
    """
    fn = _pick(impl)
    extra = {} if chunk_size is None or fn is reference else {"chunk_size": chunk_size}
    return fn(r, w, k, v, a, b, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              **extra)
