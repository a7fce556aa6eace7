"""Causal multi-head attention in JAX: GQA, sliding window or global, QK-norm, optional (partial) RoPE, optional
biases, output gate (Qwen3-Next) and logit soft-cap (Gemma-2), the score scale and muP multipliers (in/key/out),
meta tokens always visible.

Mirrors hybridc_torch/layers/attn.py (same parameters, same math). Decoding uses fixed-shape caches so `step` jits
once: the meta tokens' keys/values, and a ring buffer of `window` slots (global attention: `max_len` slots, which must
cover the context). Non-meta stream position p lives in slot (p - M) % size.

Glossary: B batch, L new steps, S keys, H query heads, G kv heads, E head_dim, D model dim, M meta tokens.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..ops.attention import attention
from .common import bias_init, linear, linear_init, rms_norm

__all__ = ["init", "init_state", "apply", "step", "rope", "partial_rope", "cache_size"]

OP = "attention"  # the op a full sequence runs (describe --kernels); decoding keeps `_attend`, the masked form


def rope(x, pos, base: float):
    """Rotate-half RoPE. x (B, H, L, E); pos (L,) absolute positions."""
    half = x.shape[-1] // 2
    inv = base ** (-jnp.arange(half, dtype=jnp.float32) / half)  # (E/2,)
    ang = pos.astype(jnp.float32)[:, None] * inv[None, :]  # (L, E/2)
    cos, sin = jnp.cos(ang).astype(x.dtype), jnp.sin(ang).astype(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def partial_rope(x, pos, base: float, rot: int):
    """RoPE on the first `rot` channels of x (B, H, L, E), the rest passed through."""
    if rot == x.shape[-1]:
        return rope(x, pos, base)
    return jnp.concatenate([rope(x[..., :rot], pos, base), x[..., rot:]], axis=-1)


QK_EPS = 1e-6  # the QK-norms' eps when the model's `norm` statement writes none


def qk_form(spec) -> str:
    """spec.qk_norm: "head" | "proj" | "none" (a hand-built spec's bool: True = head, False = none)."""
    form = spec.qk_norm
    return ("head" if form else "none") if isinstance(form, bool) else form


def _qk_norm(params, name: str, t, spec):
    """RMSNorm of t over its last axis with `name`.weight; eps and zero-centring from the model's `norm` statement."""
    w, eps = params[f"{name}.weight"], getattr(spec, "norm_eps", None)
    w = 1.0 + w.astype(jnp.float32) if getattr(spec, "norm_zero_centered", False) else w
    return rms_norm(t, w, QK_EPS if eps is None else eps)


def init(dim: int, spec, *, key) -> dict:
    kq, kk, kv, ko = jax.random.split(key, 4)
    bq, bk, bv, bo = jax.random.split(jax.random.fold_in(key, 1), 4)  # (the weights' keys stay as without biases)
    inner, kvd = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    q_out = inner * (2 if spec.gate else 1)
    p = {"q_proj.weight": linear_init(kq, q_out, dim), "k_proj.weight": linear_init(kk, kvd, dim),
         "v_proj.weight": linear_init(kv, kvd, dim), "o_proj.weight": linear_init(ko, dim, inner)}
    if spec.qkv_bias:
        p |= {"q_proj.bias": bias_init(bq, q_out, dim), "k_proj.bias": bias_init(bk, kvd, dim),
              "v_proj.bias": bias_init(bv, kvd, dim)}
    if spec.o_bias:
        p["o_proj.bias"] = bias_init(bo, dim, inner)
    qk = qk_form(spec)
    if qk != "none":  # per head (E,), or over the whole projection (H*E,) / (G*E,) (OLMo-2); zero-centred: zeros
        w = jnp.zeros if getattr(spec, "norm_zero_centered", False) else jnp.ones
        p["q_norm.weight"] = w((spec.head_dim if qk == "head" else inner,))
        p["k_norm.weight"] = w((spec.head_dim if qk == "head" else kvd,))
    if spec.kv_reuse:  # the previous attention layer's keys and values (Hymba)
        p = {k: w for k, w in p.items() if not k.startswith(("k_proj.", "v_proj.", "k_norm."))}
    return p


def cache_size(spec, max_len: int | None) -> int:
    if spec.window is not None:
        return spec.window
    if max_len is None:
        raise ValueError("global attention needs init_state(..., max_len=N) for its fixed-size KV cache")
    return max_len


def init_state(dim: int, spec, batch_size: int, dtype=jnp.float32, *, max_len=None, meta: int = 0,
               v_dim: int | None = None) -> dict:
    """KV cache; v_dim: value channels per head when not head_dim (Hymba's fused heads); none with kv_reuse."""
    if spec.kv_reuse:  # the first layer of its group holds the cache
        return {}
    g, e, size = spec.kv_heads, spec.head_dim, cache_size(spec, max_len)
    ev = e if v_dim is None else v_dim
    return {"meta_k": jnp.zeros((batch_size, g, meta, e), dtype), "meta_v": jnp.zeros((batch_size, g, meta, ev), dtype),
            "k": jnp.zeros((batch_size, g, size, e), dtype), "v": jnp.zeros((batch_size, g, size, ev), dtype)}


def _qkv(params, x, spec, pos):
    """-> q (B, H, L, E), k, v (B, G, L, E), gate (B, L, H*E) or None."""
    b, l, _ = x.shape
    h, g, e = spec.heads, spec.kv_heads, spec.head_dim
    x = x * spec.in_scale if spec.in_scale != 1.0 else x
    q, gate = linear(params, "q_proj", x), None
    if spec.gate:
        qg = q.reshape(b, l, h, 2 * e)  # per head: E query channels, then E gate channels
        q, gate = qg[..., :e], qg[..., e:].reshape(b, l, h * e)
    if qk_form(spec) == "proj":
        q = _qk_norm(params, "q_norm", q.reshape(b, l, h * e), spec)  # (B, L, H*E), before the split into heads
    q = q.reshape(b, l, h, e).transpose(0, 2, 1, 3)  # (B, H, L, E)
    if spec.kv_reuse:  # queries only: keys/values are the previous attention layer's
        return position_q(params, q, spec, pos), None, None, gate
    k = linear(params, "k_proj", x).reshape(b, l, g, e).transpose(0, 2, 1, 3)  # (B, G, L, E)
    k = k * spec.key_scale if spec.key_scale != 1.0 else k
    v = linear(params, "v_proj", x).reshape(b, l, g, e).transpose(0, 2, 1, 3)  # (B, G, L, E)
    if qk_form(spec) == "head":
        q, k = _qk_norm(params, "q_norm", q, spec), _qk_norm(params, "k_norm", k, spec)
    elif qk_form(spec) == "proj":  # k (B, G, L, E) -> (B, L, G*E) -> normed, back
        k = _qk_norm(params, "k_norm", k.transpose(0, 2, 1, 3).reshape(b, l, g * e), spec)
        k = k.reshape(b, l, g, e).transpose(0, 2, 1, 3)
    if spec.rope:
        rot = int(spec.head_dim * spec.rope_fraction)
        q, k = partial_rope(q, pos, spec.rope_base, rot), partial_rope(k, pos, spec.rope_base, rot)
    return q, k, v, gate


def position_q(params, q, spec, pos):
    """QK-norm and RoPE of queries alone, q (B, H, L, E) (a kv_reuse layer, Hymba's fused heads)."""
    q = _qk_norm(params, "q_norm", q, spec) if qk_form(spec) == "head" else q  # (proj: normed in _qkv)
    return partial_rope(q, pos, spec.rope_base, int(spec.head_dim * spec.rope_fraction)) if spec.rope else q


def _attend(q, k, v, mask, spec):
    """q (B, H, L, E); k, v (B, G, S, E); mask (L, S) bool -> (B, H, L, E)."""
    rep = spec.heads // spec.kv_heads
    k, v = jnp.repeat(k, rep, axis=1), jnp.repeat(v, rep, axis=1)  # (B, H, S, E)
    s = jnp.einsum("bhle,bhse->bhls", q, k)
    s = s / jnp.sqrt(jnp.asarray(spec.head_dim, q.dtype)) if spec.scale is None else s * spec.scale
    if spec.softcap is not None:
        s = spec.softcap * jnp.tanh(s / spec.softcap)
    s = jnp.where(mask, s, -jnp.inf)
    return jnp.einsum("bhls,bhse->bhle", jax.nn.softmax(s, axis=-1), v)


def score_scale(spec) -> float:
    """The scores' scale: the spec's `scale`, else 1/sqrt(head_dim)."""
    return spec.head_dim ** -0.5 if spec.scale is None else spec.scale


def _mask(q_pos, k_pos, k_valid, n_meta: int, window):
    ok = k_valid[None, :] & (k_pos[None, :] <= q_pos[:, None])
    if window is None:
        return ok
    return ok & ((q_pos[:, None] - k_pos[None, :] < window) | (k_pos[None, :] < n_meta))


def _cached_keys(state, pos, n_meta: int):
    """Positions and validity of the cached keys (meta cache, then ring slots) before a chunk starting at `pos`."""
    m, size = state["meta_k"].shape[2], state["k"].shape[2]
    meta_pos = jnp.arange(m)
    meta_ok = jnp.broadcast_to(pos >= m, (m,))
    slot = jnp.arange(size)
    ring_pos = pos - 1 - jnp.mod(pos - 1 - n_meta - slot, size)  # latest position held by each slot
    ring_ok = ring_pos >= n_meta
    return jnp.concatenate([meta_pos, ring_pos]), jnp.concatenate([meta_ok, ring_ok])


def apply(params, x, spec, state=None, ctx=None):
    """x (B, L, D) normed -> (y (B, L, D), new_state or None). ctx: pos (int or traced), meta (int), meta_in_chunk (int)."""
    ctx = {} if ctx is None else ctx
    b, l, _ = x.shape
    q_pos = ctx.get("pos", 0) + jnp.arange(l)  # (L,)
    q, k, v, gate = _qkv(params, x, spec, q_pos)
    y, new = attend_heads(q, k, v, q_pos, spec, state, ctx)  # (B, L, H*E)
    y = linear(params, "o_proj", y if gate is None else y * jax.nn.sigmoid(gate))
    y = y * spec.out_scale if spec.out_scale != 1.0 else y
    return y, new


def attend_heads(q, k, v, q_pos, spec, state, ctx):
    """q (B, H, L, E), k (B, G, L, E), v (B, G, L, Ev) at positions q_pos (L,) -> (y (B, L, H*Ev), new_state).

    The keys/values attended (with their positions and validity) are left in ctx["kv"] for the next attention
    layers; with kv_reuse (Hymba's cross-layer KV sharing) k, v are None and the ones left there are read."""
    pos, n_meta = ctx.get("pos", 0), ctx.get("meta", 0)
    b, _, l, _ = q.shape
    if spec.kv_reuse:
        k_all, v_all, k_pos, k_ok = ctx["kv"]
    elif state is None:
        k_all, v_all, k_pos, k_ok = k, v, q_pos, jnp.ones((l,), bool)
    else:
        c_pos, c_ok = _cached_keys(state, pos, n_meta)
        k_all = jnp.concatenate([state["meta_k"], state["k"], k], axis=2)  # (B, G, S, E)
        v_all = jnp.concatenate([state["meta_v"], state["v"], v], axis=2)  # (B, G, S, Ev)
        k_pos, k_ok = jnp.concatenate([c_pos, q_pos]), jnp.concatenate([c_ok, jnp.ones((l,), bool)])
    if not spec.kv_reuse:
        ctx["kv"] = (k_all, v_all, k_pos, k_ok)
    if state is None and k_all.shape[2] == l and (spec.window is None or n_meta == 0):  # causal-only mask
        y = attention(q, k_all, v_all, score_scale(spec), spec.softcap, spec.window)  # (B, H, L, Ev), ops/attention
    else:  # a cache, or meta tokens a window never hides: the masked form
        y = _attend(q, k_all, v_all, _mask(q_pos, k_pos, k_ok, n_meta, spec.window), spec)  # (B, H, L, Ev)
    y = y.transpose(0, 2, 1, 3).reshape(b, l, -1)  # (B, L, H*Ev)
    if state is None:
        return y, None
    return y, ({} if spec.kv_reuse else _update(state, k, v, q_pos, n_meta, ctx.get("meta_in_chunk", 0)))


def _update(state, k, v, q_pos, n_meta: int, meta_in_chunk: int):
    """Meta tokens of this chunk go to the meta cache; the last `size` others to their ring slots."""
    new = dict(state)
    if meta_in_chunk:
        new["meta_k"], new["meta_v"] = k[:, :, :meta_in_chunk], v[:, :, :meta_in_chunk]
    size = state["k"].shape[2]
    keep = min(k.shape[2] - meta_in_chunk, size)
    if keep > 0:
        slots = jnp.mod(q_pos[-keep:] - n_meta, size)  # (keep,) distinct
        new["k"] = state["k"].at[:, :, slots].set(k[:, :, -keep:])
        new["v"] = state["v"].at[:, :, slots].set(v[:, :, -keep:])
    return new


def step(params, x_t, spec, state, ctx=None):
    y, new = apply(params, x_t[:, None], spec, state, ctx)
    return y[:, 0], new
