"""The gated delta rule recurrence (Gated DeltaNet), in JAX.

Paper: Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule" (2024, arXiv:2412.06464).
Reference implementation: flash-linear-attention, ``fla.ops.gated_delta_rule`` (``chunk_gated_delta_rule`` signature,
[B, T, H, K] layout; ``fla/ops/gated_delta_rule/naive.py::naive_recurrent_gated_delta_rule`` for the math). Mirrors
hybridc_torch/kernels/gated_delta_rule.py: the reference is a ``lax.scan`` over time; the fast form (``impl="chunk"``)
is the chunked WY / UT-transform form (``chunk_delta_core``, chunk 64), with ``lax.scan`` over chunks for the state
pass and ``jax.grad`` through it. On CPU ``auto`` picks torch's fused C++ kernel as an XLA custom call (``impl="cpp"``, ``cpu_ffi``); elsewhere
(or without a compiler) ``impl="scan_chunk"``: the reference's forward when not
differentiated, the chunked form under ``jax.grad`` (`scan_forward_chunk_backward`: each is the faster one there).

Per head, with state S (K, V), log-space decay g_t (scalar per head) and one step t:
    S'  = exp(g_t) * S_{t-1}                          # (K, V)
    u_t = beta_t * (v_t - S'^T k_t)                   # (V,)
    S_t = S' + k_t u_t^T                              # (K, V)
    o_t = S_t^T (scale * q_t)                         # (V,)
No internal L2 normalisation or gate activation: the caller passes normalised q/k, g in log space, beta in (0, 1).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._dispatch import choose

__all__ = ["gated_delta_rule", "gated_delta_rule_step", "reference", "chunk_gated_delta_rule",
           "scan_chunk_gated_delta_rule"]


def _acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: at least fp32 (fp64 inputs stay fp64)."""
    return jnp.promote_types(dtype, jnp.float32)


def gated_delta_rule_step(q_t, k_t, v_t, g_t, beta_t, state, scale=None):
    """One recurrence step. q_t, k_t (B, H, K); v_t (B, H, V); g_t, beta_t (B, H); state (B, H, K, V).

    Returns (o_t (B, H, V) in q_t's dtype, new state (B, H, K, V) in the accumulation dtype).
    """
    acc = _acc_dtype(q_t.dtype)
    scale = q_t.shape[-1] ** -0.5 if scale is None else scale
    q, k, v, g, beta = (t.astype(acc) for t in (q_t, k_t, v_t, g_t, beta_t))
    S = state.astype(acc) * jnp.exp(g)[..., None, None]                 # (B, H, K, V)
    u = beta[..., None] * (v - jnp.einsum("bhk,bhkv->bhv", k, S))       # (B, H, V)
    S = S + k[..., :, None] * u[..., None, :]                           # (B, H, K, V)
    o = jnp.einsum("bhk,bhkv->bhv", q * scale, S)                       # (B, H, V)
    return o.astype(q_t.dtype), S


def reference(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """Sequential oracle: ``lax.scan`` over time with fp32 (or wider) state accumulation."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    acc = _acc_dtype(q.dtype)
    if initial_state is None:
        S = jnp.zeros((B, H, K, V), acc)                                # (B, H, K, V)
    else:
        S = initial_state.astype(acc)                                   # (B, H, K, V)

    def cell(S, xs):
        o_t, S = gated_delta_rule_step(*xs, S, scale)                   # (B, H, V)
        return S, o_t

    S, o = lax.scan(cell, S, tuple(jnp.moveaxis(t, 1, 0) for t in (q, k, v, g, beta)))   # (T, B, H, V)
    return jnp.moveaxis(o, 0, 1).astype(q.dtype), (S if output_final_state else None)     # (B, T, H, V)


def _chunk_layout(x, C, pad, keys_last=False):
    """(B, T, H, ...) -> chunk-major (N, B, H, C, ...) with T zero-padded by `pad` steps to N*C.

    keys_last: (B, T, H, K) -> (N, B, H, K, C), the transposed layout that keeps K^T-products canonical matmuls.
    Chunk-major: the ``lax.scan`` over chunks slices axis 0 without a transpose.
    """
    if pad:
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    B, T, H = x.shape[:3]
    x = x.reshape((B, T // C, C, H) + x.shape[3:])                      # (B, N, C, H, ...)
    order = (1, 0, 3, 4, 2) if keys_last else (1, 0, 3, 2) + tuple(range(4, x.ndim))
    return x.transpose(order)


def unit_lower_inverse(n: jax.Array) -> jax.Array:
    """(I + n)^{-1} for strictly lower-triangular n (..., C, C), by recursive block doubling.

    With M = [[A, 0], [X, D]] the inverse is [[A^-1, 0], [-D^-1 X A^-1, D^-1]]: starting from the unit 1x1 blocks,
    each level merges neighbouring diagonal blocks with two batched matmuls (log2 C levels); plain matmuls for
    jax.grad. Only the strictly lower part of n is read.
    """
    C = n.shape[-1]
    P = 1 << max(C - 1, 0).bit_length()                                 # next power of two >= C
    if P != C:                                                          # identity padding keeps the inverse exact
        n = jnp.pad(n, [(0, 0)] * (n.ndim - 2) + [(0, P - C), (0, P - C)])
    lead = n.shape[:-2]
    inv = jnp.ones(lead + (P, 1, 1), n.dtype)                           # (..., nb, s, s) diagonal-block inverses
    s = 1
    while s < P:
        nb = P // (2 * s)
        blocks = jnp.diagonal(n.reshape(lead + (nb, 2 * s, nb, 2 * s)), axis1=-4, axis2=-2)   # (..., 2s, 2s, nb)
        x = jnp.moveaxis(blocks, -1, -3)[..., s:, :s]                   # (..., nb, s, s) lower-left blocks
        a_inv, d_inv = inv[..., 0::2, :, :], inv[..., 1::2, :, :]       # (..., nb, s, s)
        low = -(d_inv @ x @ a_inv)                                      # (..., nb, s, s)
        top = jnp.concatenate([a_inv, jnp.zeros_like(a_inv)], axis=-1)  # (..., nb, s, 2s)
        bottom = jnp.concatenate([low, d_inv], axis=-1)                 # (..., nb, s, 2s)
        inv = jnp.concatenate([top, bottom], axis=-2)                   # (..., nb, 2s, 2s)
        s *= 2
    return inv[..., 0, :C, :C]


def pass_states(S, decay, left, right, inject, q_eff, o_c):
    """Sequential pass over chunks with a diagonal-plus-low-rank chunk transition, outputs formed on the way:
        o_n = q_eff_n S_n + o_c_n,    S_{n+1} = decay_n * S_n + left_n (right_n S_n) + inject_n.
    S (B, H, K, V); decay (N, B, H, K|1, 1); left (N, B, H, K, C); right (N, B, H, C, K); inject (N, B, H, K, V);
    q_eff (N, B, H, C, K); o_c (N, B, H, C, V). Returns (o (N, B, H, C, V), the final state (B, H, K, V)).
    The rank-C transition costs 4CKV per chunk instead of forming (K, K) matrices (2K^2 C) and applying them
    (2K^2 V), and the per-chunk entry states are never stacked.
    """
    def cell(S, xs):
        dec, lf, rt, inj, q, o = xs
        return dec * S + lf @ (rt @ S) + inj, q @ S + o

    S, o = lax.scan(cell, S, (decay, left, right, inject, q_eff, o_c))
    return o, S


def _unchunk(o, T):
    """(N, B, H, C, V) -> (B, T, H, V), dropping the padded tail."""
    N, B, H, C, V = o.shape
    return o.transpose(1, 0, 3, 2, 4).reshape(B, N * C, H, V)[:, :T]


def scan_forward_chunk_backward(reference_fn, chunked_fn, *arrays):
    """reference_fn(*arrays) as the value, with the VJP of chunked_fn (same contract): the "scan_chunk" impls.

    Measured on CPU (B4, L1024, layer widths): XLA runs the ``lax.scan`` reference forward 1.5-4x faster than the
    chunked forward (the per-step work is small and its while loop cheap, where the chunked form pays for batched
    small matmuls and layout changes), but ``jax.grad`` through the scan is 3-7x slower than through the chunked
    form. So: undifferentiated calls (inference, prefill) run the scan; under ``jax.grad``/``jax.vjp`` the forward
    rule runs the chunked form and keeps its VJP (``jax.vjp``'s residuals) for the backward. Values agree to fp32
    rounding (both are tested against the reference). Forward-mode (``jax.jvp``) is not defined (custom_vjp).
    """
    @jax.custom_vjp
    def f(*arrays):
        return reference_fn(*arrays)

    f.defvjp(lambda *arrays: jax.vjp(chunked_fn, *arrays), lambda vjp, cotangent: vjp(cotangent))
    return f(*arrays)


def chunk_delta_core(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size):
    """Chunked WY / UT-transform form of the (gated) delta rule; g None means no decay (plain delta rule).

    Inside a chunk of C steps (cumulative log decay G_i = g_1 + ... + g_i, pair decays exp(G_i - G_j), j <= i):
        (I + diag(beta) tril_strict(exp(G_i - G_j) k_i.k_j)) [U_v | W] = [beta v | beta exp(G) k]
    so the delta-rule updates of the chunk are U = U_v - W S0 (S0 the state entering the chunk), and
        O = (scale q exp(G)) S0 + tril(exp(G_i - G_j) scale q_i.k_j) U,
        S_C = exp(G_C) S0 + (k exp(G_C - G))^T U = (exp(G_C) I - kd^T W) S0 + kd^T U_v.
    Everything but the S0 products runs for all chunks at once (batched matmuls and a batched unit-triangular
    inverse by block doubling); only the state pass (`pass_states`: a rank-C update and the chunk's outputs per
    chunk) is a ``lax.scan``. Layouts are chunk-major (N, B, H, C, ...) so the scan slices without transposes.
    Padded tail steps have k = v = beta = 0 and g = 0, which leave the state unchanged. ``jax.grad`` differentiates
    through it. The pair decays are masked on both sides of the exp (exponent 0 above the diagonal, so no inf * 0
    reaches the gradient): the same values as exp(where(lower, diff, -inf)), whose gradient XLA compiled 2x slower
    (7.8 vs 3.7 s for the B4 L1024 forward+backward).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    out_dtype, acc = q.dtype, _acc_dtype(q.dtype)
    scale = K ** -0.5 if scale is None else scale
    S = jnp.zeros((B, H, K, V), acc) if initial_state is None else initial_state.astype(acc)   # (B, H, K, V)
    if T == 0:
        return jnp.zeros((B, 0, H, V), out_dtype), (S if output_final_state else None)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    C = min(int(chunk_size), T)
    pad = (-T) % C
    N = (T + pad) // C
    k_t = _chunk_layout(k.astype(acc), C, pad, keys_last=True)          # (N, B, H, K, C)
    q, k, v = (_chunk_layout(t.astype(acc), C, pad) for t in (q, k, v))   # (N, B, H, C, K|V)
    beta = _chunk_layout(beta.astype(acc), C, pad)[..., None]           # (N, B, H, C, 1)
    kb = k * beta                                                       # (N, B, H, C, K)
    mix = kb @ k_t                                                      # (N, B, H, C, C) beta_i k_i.k_j
    aqk = (q * scale) @ k_t                                             # (N, B, H, C, C) scale q_i.k_j
    if g is None:
        qg, kd_t, k_rhs = q * scale, k_t, kb
        aqk = jnp.tril(aqk)                                             # lower incl.
        decay_c = jnp.ones((N, 1, 1, 1, 1), acc)
    else:
        G = jnp.cumsum(_chunk_layout(g.astype(acc), C, pad), axis=-1)   # (N, B, H, C) inclusive
        lower = jnp.tril(jnp.ones((C, C), bool))
        diff = jnp.where(lower, G[..., :, None] - G[..., None, :], 0.0)
        dec = jnp.where(lower, jnp.exp(diff), 0.0)   # (N, B, H, C, C) e^{G_i-G_j}
        mix, aqk = mix * dec, aqk * dec                                 # lower (upper exactly 0)
        eG = jnp.exp(G)[..., None]                                      # (N, B, H, C, 1)
        qg, k_rhs = q * (scale * eG), kb * eG                           # (N, B, H, C, K)
        kd_t = k_t * jnp.exp(G[..., -1:] - G)[..., None, :]             # (N, B, H, K, C) exp(G_C - G_j) k_j
        decay_c = jnp.exp(G[..., -1])[..., None, None]                  # (N, B, H, 1, 1)
    t_inv = unit_lower_inverse(mix)                                     # reads the strictly lower part only
    u_v = t_inv @ (v * beta)                                            # (N, B, H, C, V)
    w = t_inv @ k_rhs                                                   # (N, B, H, C, K)
    # S_C = e^{G_C} S0 + kd^T (u_v - w S0) = e^{G_C} S0 - kd^T (w S0) + kd^T u_v;
    # O = qg S0 + aqk (u_v - w S0) = (qg - aqk w) S0 + aqk u_v.
    o, S = pass_states(S, decay_c, -kd_t, w, kd_t @ u_v, qg - aqk @ w, aqk @ u_v)   # (N, B, H, C, V), (B, H, K, V)
    o = _unchunk(o, T)                                                  # (B, T, H, V), as the reference
    return o.astype(out_dtype), (S if output_final_state else None)


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                           chunk_size=64):
    """Chunked gated delta rule (WY / UT-transform form, chunk 64 by default); same contract as ``reference``."""
    return chunk_delta_core(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size)


def scan_chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                                chunk_size=64):
    """Values from the ``lax.scan`` reference, gradients from the chunked form (`scan_forward_chunk_backward`)."""
    return scan_forward_chunk_backward(
        lambda *a: reference(*a[:5], scale, a[5], output_final_state),
        lambda *a: chunk_delta_core(*a[:5], scale, a[5], output_final_state, chunk_size),
        q, k, v, g, beta, initial_state)


def cpp(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=None):
    """torch's fused sequential C++ kernel as an XLA custom call (``cpu_ffi``; CPU; `chunk_size` is ignored);
    g None runs the plain delta rule."""
    from . import cpu_ffi

    if cpu_ffi.load() is None:
        raise RuntimeError("the C++ CPU kernels could not be built here; use impl='scan_chunk'")
    return cpu_ffi.delta_rule_cpp(q, k, v, g, beta, scale, initial_state, output_final_state)


_IMPLS = {"reference": reference, "chunk": chunk_gated_delta_rule, "scan_chunk": scan_chunk_gated_delta_rule, "cpp": cpp}


def _auto(device: str = "cpu") -> str:
    """CPU: the C++ kernel as an XLA custom call when it builds (B4 L1024: f+b ~1.7x faster than torch's chunked
    form), else "scan_chunk" (the scan forward with the chunked backward), which GPUs also get for now."""
    if device == "cpu":
        from . import cpu_ffi

        if cpu_ffi.load() is not None:
            return "cpp"
    return "scan_chunk"


def _pick(impl: str):
    return choose("gated_delta_rule", _IMPLS, impl, _auto(jax.default_backend()))


def gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, *, impl="auto",
                     chunk_size=None):
    """Gated delta rule over a sequence, as fla's ``chunk_gated_delta_rule`` (no in-kernel l2norm/gate/sigmoid).

    q, k (B, T, H, K); v (B, T, H, V); g (B, T, H) log decay; beta (B, T, H); scale defaults to K**-0.5;
    initial_state (B, H, K, V) or None. Returns (o (B, T, H, V), final_state (B, H, K, V) or None).
    impl: "auto" (CPU: "cpp", else "scan_chunk": scan forward, chunked backward), "reference", "chunk",
    "scan_chunk" or "cpp"; chunk_size (None = the impl's default) is ignored by the reference and "cpp".
    """
    fn = _pick(impl)
    extra = {} if chunk_size is None or fn is reference else {"chunk_size": chunk_size}
    return fn(q, k, v, g, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              **extra)
