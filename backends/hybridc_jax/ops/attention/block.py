"""Blockwise causal attention with an online softmax (flash-style), skipping the key blocks a query block cannot see.

Paper: Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning" (2023), Alg. 1
(forward: running max m, running sum l, rescaled accumulator) and Alg. 2 (backward: P recomputed from the saved
logsumexp, D = rowsum(dO * O); outer loop over key blocks). Reference implementation: torch's CPU flash attention
(aten/src/ATen/native/cpu/FlashAttentionKernel.cpp), which SDPA runs on CPU.

The sequence is cut into n blocks of T (the last one padded; padded keys sit after every real query, so the causal
mask hides them). Query block i attends key blocks lo(i)..i: lo = 0, or the block of i*T - window + 1 with a window;
the blocks above the diagonal and before the window are never computed, so causal attention does about half of the
dense form's work and a window of W about L * (W + T). Loops are `lax.map` over query blocks with a `fori_loop`
of dynamic trip count over key blocks: the graph (and the compile time) does not grow with the length. The mask is
applied to every block (a compare fused into the exponent's loop).

The backward (a custom VJP) recomputes each block's probabilities from the saved logsumexp instead of keeping
them: memory O(L) beyond the inputs and gradients, as torch's kernel.

Glossary: B batch, G kv heads, R query heads per kv head (H = G R), L length (queries = keys), E head dim,
Ev value head dim, n blocks, T block length.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["block_attention", "block_size", "key_blocks", "query_blocks"]

BLOCK = 256  # the longest block; measured on CPU: 128 ties at 1k tokens and is 1.2x slower forward at 4k, 512 1.3x at 1k
MASKED = -1e30  # finite: a row whose first block is all masked gets m = MASKED, not exp(-inf + inf) = nan; every row
#                 sees its own key, whose larger max then scales those terms by exp(MASKED - m) = 0


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def block_size(length: int, block: int = BLOCK) -> int:
    """T: n = ceil(L / block) blocks of equal length (a multiple of 8), so the padding stays under 8 n."""
    return min(block, 8 * _cdiv(_cdiv(length, _cdiv(length, block)), 8))


def key_blocks(i, t: int, window: int | None):
    """(lo, hi): the key blocks query block i sees, lo <= j < hi."""
    lo = 0 if window is None else jnp.maximum(0, (i * t - window + 1) // t)
    return lo, i + 1


def query_blocks(j, n: int, t: int, window: int | None):
    """(lo, hi): the query blocks that see key block j."""
    return j, (n if window is None else jnp.minimum(n, (j * t + t + window - 2) // t + 1))


def _visible(i, j, t: int, window: int | None):
    """(T, T) bool: key j*T + c visible to query i*T + r."""
    qi, kj = i * t + jnp.arange(t)[:, None], j * t + jnp.arange(t)[None, :]
    ok = kj <= qi
    return ok if window is None else ok & (qi - kj < window)


def _scores(qb, kb, scale, softcap):
    """qb (B, G, R, T, E), kb (B, G, T, E) -> (scores (B, G, R, T, T) fp32, tanh or None for the soft-cap's VJP)."""
    a = jnp.einsum("bgrle,bgse->bgrls", qb, kb, preferred_element_type=jnp.float32) * scale
    if softcap is None:
        return a, None
    th = jnp.tanh(a / softcap)
    return softcap * th, th


def _blocks(x, t: int, fill: float = 0.0):
    """(..., L, C) -> (n, ..., T, C), padded with `fill` to n T."""
    length = x.shape[-2]
    n = _cdiv(length, t)
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, n * t - length), (0, 0)], constant_values=fill)
    return jnp.moveaxis(x.reshape(*x.shape[:-2], n, t, x.shape[-1]), -3, 0)


def _unblocks(x, length: int):
    """(n, ..., T, C) -> (..., L, C)."""
    x = jnp.moveaxis(x, 0, -3)
    return x.reshape(*x.shape[:-3], -1, x.shape[-1])[..., :length, :]


def _forward(q, k, v, scale, softcap, window, t):
    """q (B, G, R, L, E), k (B, G, L, E), v (B, G, L, Ev) -> o (B, G, R, L, Ev) fp32, lse (B, G, R, L) fp32."""
    qs, ks, vs = _blocks(q, t), _blocks(k, t), _blocks(v, t)  # (n, B, G, R, T, E), (n, B, G, T, E), ...
    shape = qs.shape[1:-1]  # (B, G, R, T)

    def row(i):
        def step(j, carry):
            m, l, acc = carry
            s, _ = _scores(qs[i], ks[j], scale, softcap)
            s = jnp.where(_visible(i, j, t, window), s, MASKED)  # (B, G, R, T, T)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            p, c = jnp.exp(s - m_new[..., None]), jnp.exp(m - m_new)
            pv = jnp.einsum("bgrls,bgse->bgrle", p.astype(vs.dtype), vs[j], preferred_element_type=jnp.float32)
            return m_new, c * l + jnp.sum(p, axis=-1), c[..., None] * acc + pv

        init = (jnp.full(shape, MASKED, jnp.float32), jnp.zeros(shape, jnp.float32),
                jnp.zeros(shape + (vs.shape[-1],), jnp.float32))
        m, l, acc = lax.fori_loop(*key_blocks(i, t, window), step, init)
        return acc / l[..., None], (m + jnp.log(l))[..., None]

    o, lse = lax.map(row, jnp.arange(qs.shape[0]))  # (n, B, G, R, T, Ev), (n, B, G, R, T, 1)
    return _unblocks(o, q.shape[-2]), _unblocks(lse, q.shape[-2])[..., 0]


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _attention(q, k, v, scale, softcap, window, t):
    return _forward(q, k, v, scale, softcap, window, t)[0].astype(v.dtype)


def _fwd(q, k, v, scale, softcap, window, t):
    o, lse = _forward(q, k, v, scale, softcap, window, t)
    return o.astype(v.dtype), (q, k, v, o, lse)


def _bwd(scale, softcap, window, t, res, do):
    """FlashAttention-2 Alg. 2 per key block j: dV_j = sum_i P^T dO_i, dS = P (dO_i V_j^T - D_i), dK_j = sum_i dS^T Q_i,
    dQ_i += dS K_j (dS times the scale, and the soft-cap's 1 - tanh^2 where one is set)."""
    q, k, v, o, lse = res
    delta = jnp.sum(do.astype(jnp.float32) * o, axis=-1, keepdims=True)  # (B, G, R, L, 1)
    qs, dos, ks, vs = _blocks(q, t), _blocks(do, t), _blocks(k, t), _blocks(v, t)
    lses, deltas = _blocks(lse[..., None], t, jnp.inf), _blocks(delta, t)  # (n, B, G, R, T, 1); padded rows: P = 0
    n = qs.shape[0]

    def column(dq, j):
        def step(i, carry):
            dq, dk, dv = carry
            s, th = _scores(qs[i], ks[j], scale, softcap)
            p = jnp.where(_visible(i, j, t, window), jnp.exp(s - lses[i]), 0.0)  # (B, G, R, T, T)
            dv = dv + jnp.einsum("bgrls,bgrle->bgse", p.astype(dos.dtype), dos[i], preferred_element_type=jnp.float32)
            dp = jnp.einsum("bgrle,bgse->bgrls", dos[i], vs[j], preferred_element_type=jnp.float32)
            ds = p * (dp - deltas[i]) * scale
            ds = (ds if th is None else ds * (1.0 - th * th)).astype(qs.dtype)
            dk = dk + jnp.einsum("bgrls,bgrle->bgse", ds, qs[i], preferred_element_type=jnp.float32)
            dq = dq.at[i].add(jnp.einsum("bgrls,bgse->bgrle", ds, ks[j], preferred_element_type=jnp.float32))
            return dq, dk, dv

        init = (dq, jnp.zeros(ks.shape[1:], jnp.float32), jnp.zeros(vs.shape[1:], jnp.float32))
        dq, dk, dv = lax.fori_loop(*query_blocks(j, n, t, window), step, init)
        return dq, (dk, dv)

    dq, (dk, dv) = lax.scan(column, jnp.zeros(qs.shape, jnp.float32), jnp.arange(n))
    length = q.shape[-2]
    return (_unblocks(dq, length).astype(q.dtype), _unblocks(dk, length).astype(k.dtype),
            _unblocks(dv, length).astype(v.dtype))


_attention.defvjp(_fwd, _bwd)


def block_attention(q, k, v, scale: float, softcap: float | None = None, window: int | None = None, *,
                    block: int = BLOCK):
    """Causal self-attention, q (B, H, L, E), k (B, G, L, E), v (B, G, L, Ev) -> (B, H, L, Ev).

    Key j is visible to query i when j <= i (and i - j < window); scores are scale * q.k, soft-capped as
    softcap * tanh(s / softcap) when softcap is set. Query head h uses kv head h // (H / G)."""
    b, h, length, e = q.shape
    g = k.shape[1]
    qg = q.reshape(b, g, h // g, length, e)  # (B, G, R, L, E): the query heads of one kv head together
    y = _attention(qg, k, v, float(scale), None if softcap is None else float(softcap),
                   None if window is None else int(window), block_size(length, block))
    return y.reshape(b, h, length, v.shape[-1])
