"""What the chunked JAX forms share: the chunk-major layout and its frame, the sequential pass over chunks, the
unit-triangular inverse, and the "scan_chunk" pairing of a ``lax.scan`` forward with a chunked backward.

Users: the (gated) delta rule's WY / UT form (``gated_delta_rule/chunk.py``, ``delta_rule/chunk.py``), RWKV-7's
diagonal-plus-low-rank form (``rwkv7/chunk.py``) and, for `scan_forward_chunk_backward` only, SSD
(``ssd/chunk.py``). Reference implementation of the chunked forms: flash-linear-attention (``fla.ops.delta_rule``,
``fla.ops.gated_delta_rule``, ``fla.ops.rwkv7``; [B, T, H, K] layout, state stored (K, V)).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key head dim, V value head dim, C chunk length, N chunks.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["chunk_layout", "chunked", "pass_states", "scan_forward_chunk_backward", "unchunk", "unit_lower_inverse"]


def chunked(core, r, v, scale, initial_state, output_final_state, chunk_size):
    """The frame of a chunked (K, V)-state form with the references' contract: the state init, T == 0, the chunk
    size check, the padding and the output layout. r (B, T, H, K) the queries (receptances), v (B, T, H, V); scale
    None means K**-0.5; initial_state (B, H, K, V) or None.

    core(S0, C, pad, acc, scale) -> (o (N, B, H, C, V), final state (B, H, K, V)) runs the chunks: S0 (B, H, K, V)
    the entry state in the accumulation dtype acc (at least fp32; fp64 stays fp64), C <= T the chunk length and
    `pad` the zero steps that complete the last chunk (``chunk_layout``). Returns (o (B, T, H, V) in r.dtype, the
    final state in acc, or None unless output_final_state).
    """
    B, T, H, K = r.shape
    V = v.shape[-1]
    acc = jnp.promote_types(r.dtype, jnp.float32)
    scale = K ** -0.5 if scale is None else scale
    S = jnp.zeros((B, H, K, V), acc) if initial_state is None else initial_state.astype(acc)   # (B, H, K, V)
    if T == 0:
        return jnp.zeros((B, 0, H, V), r.dtype), (S if output_final_state else None)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    C = min(int(chunk_size), T)
    o, S = core(S, C, (-T) % C, acc, scale)                             # (N, B, H, C, V), (B, H, K, V)
    return unchunk(o, T).astype(r.dtype), (S if output_final_state else None)   # (B, T, H, V), as the reference


def chunk_layout(x, C, pad, keys_last=False):
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


def unchunk(o, T):
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
