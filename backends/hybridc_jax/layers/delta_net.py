"""DeltaNet mixer layer (JAX).

Paper: Yang et al., "Parallelizing Linear Transformers with the Delta Rule over Sequence Length" (NeurIPS 2024,
arXiv:2406.06484); the delta rule itself: Schlag et al. 2021 (arXiv:2102.11174).
Reference implementation: flash-linear-attention ``fla/layers/delta_net.py`` (class ``DeltaNet`` with its defaults
qk_activation='silu', qk_norm='l2', use_beta=True, conv_bias=False, norm_eps=1e-5). Mirrors
hybridc_torch/layers/delta_net.py: same parameter names, shapes (torch's (out, in) linears) and math.

    q = l2norm(silu(conv_q(q_proj x)));  k = l2norm(silu(conv_k(k_proj x)));  v = silu(conv_v(v_proj x))
    beta = sigmoid(b_proj x);  o = delta_rule(q, k, v, beta);  y = o_proj(o_norm(o [, g_proj x]))

This module also holds the pieces shared with Gated DeltaNet (torch's ``_DeltaFamily``): ``l2norm``,
``gated_rms_norm``, ``Dims`` and the ``family_*`` functions.

Dimension glossary:
    B batch, L sequence length, D model dim, H heads, K key head dim, V value head dim,
    W short-conv width.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..ops.delta_rule import delta_rule, delta_rule_step
from . import _shortconv
from .common import linear, linear_init, rms_norm

__all__ = ["init", "init_state", "apply", "step", "gated_rms_norm", "l2norm"]

OP = "delta_rule"  # the recurrence it runs (describe --kernels)

NORM_EPS = 1e-5  # fla's norm_eps; the model's `norm eps=` replaces it (spec.norm_eps, `out_norm_eps`)


def out_norm_eps(spec) -> float:
    """The output norm's eps: the model's `norm eps=` when written (transformers' rms_norm_eps), else fla's 1e-5."""
    eps = getattr(spec, "norm_eps", None)
    return NORM_EPS if eps is None else float(eps)


def l2norm(x, eps: float = 1e-6):
    """fla's l2norm (``fla/modules/l2norm.py``): x / sqrt(sum(x^2) + eps) over the last dim."""
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


def gated_rms_norm(x, g, weight, eps: float = NORM_EPS):
    """fla's ``FusedRMSNormGated`` (swish gate, norm before gate): rmsnorm(x) * weight * silu(g)."""
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)
    return x * rstd * weight * jax.nn.silu(g)


# --- shared plumbing (torch: _DeltaFamily) -------------------------------------------------------------------------------
class Dims(NamedTuple):
    """Static sizes of a delta-family layer (v_heads: value heads, a multiple of heads; q and k are shared within a
    group, fla's GVA)."""
    heads: int
    head_k: int
    head_v: int
    conv: int
    gate: bool
    v_heads: int
    eps: float = NORM_EPS  # the output norm's

    @property
    def key_dim(self) -> int:
        return self.heads * self.head_k

    @property
    def value_dim(self) -> int:
        return self.v_heads * self.head_v


def family_dims(name: str, dim: int, heads: int, head_k: int, head_v: int, conv: int, gate: bool,
                v_heads: int = 0, eps: float = NORM_EPS) -> Dims:
    v_heads = v_heads or heads
    if min(dim, heads, head_k, head_v) <= 0 or conv < 0 or v_heads % heads:
        raise ValueError(f"{name}: dim/heads/head dims must be > 0, conv >= 0 and v_heads a multiple of heads, got "
                         f"dim={dim} heads={heads} v_heads={v_heads} head_k={head_k} head_v={head_v} conv={conv}")
    return Dims(heads, head_k, head_v, conv, gate, v_heads, eps)


def family_init_convs(d: Dims, *, key) -> dict[str, jax.Array]:
    if d.conv == 0:
        return {}
    kq, kk, kv = jax.random.split(key, 3)
    p = {}
    for name, channels, k in (("q", d.key_dim, kq), ("k", d.key_dim, kk), ("v", d.value_dim, kv)):
        p |= {f"{name}_conv1d.{n}": w for n, w in _shortconv.init(channels, d.conv, key=k).items()}  # (C, 1, W)
    return p


def family_init_output(dim: int, d: Dims, *, key) -> dict[str, jax.Array]:
    kg, ko = jax.random.split(key)
    p = {"g_proj.weight": linear_init(kg, d.value_dim, dim)} if d.gate else {}
    return p | {"o_norm.weight": jnp.ones((d.head_v,), jnp.float32),
                "o_proj.weight": linear_init(ko, dim, d.value_dim)}


def family_init_state(d: Dims, batch_size: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    state = {}
    if d.conv > 0:
        for name, channels in (("q", d.key_dim), ("k", d.key_dim), ("v", d.value_dim)):
            state[f"conv_{name}"] = _shortconv.init_state(channels, d.conv, batch_size, dtype)   # (B, C, W-1)
    acc = jnp.promote_types(dtype, jnp.float32)
    state["recurrent"] = jnp.zeros((batch_size, d.v_heads, d.head_k, d.head_v), acc)           # (B, Hv, K, V)
    return state


def family_qkv(params, x, d: Dims, state, step: bool):
    """x (B, L, D) or (B, D) when step. Returns q, k (..., Hv, K) (each key head repeated over its value heads),
    v (..., Hv, V), new conv states."""
    new_state, outs = {}, []
    for name in ("q", "k", "v"):
        p = linear(params, f"{name}_proj", x)                                        # (..., C)
        if d.conv == 0:
            outs.append(jax.nn.silu(p))
            continue
        conv, key = {"weight": params[f"{name}_conv1d.weight"]}, f"conv_{name}"
        cache = None if state is None else state[key]
        y, new_state[key] = _shortconv.step(conv, p, cache) if step else _shortconv.apply(conv, p, cache)
        outs.append(y)                                                               # (..., C)
    q, k, v = outs
    lead = x.shape[:-1]
    q = l2norm(q.reshape(lead + (d.heads, d.head_k)))                                # (..., H, K)
    k = l2norm(k.reshape(lead + (d.heads, d.head_k)))                                # (..., H, K)
    v = v.reshape(lead + (d.v_heads, d.head_v))                                      # (..., Hv, V)
    if d.v_heads != d.heads:
        q, k = (jnp.repeat(t, d.v_heads // d.heads, axis=-2) for t in (q, k))       # (..., Hv, K)
    return q, k, v, new_state


def family_out(params, o, x, d: Dims):
    """o (..., Hv, V), x (..., D) -> y (..., D)."""
    if d.gate:
        g = linear(params, "g_proj", x).reshape(o.shape)                             # (..., Hv, V)
        o = gated_rms_norm(o, g, params["o_norm.weight"].astype(o.dtype), d.eps)
    else:
        o = rms_norm(o, params["o_norm.weight"], d.eps)
    return linear(params, "o_proj", o.reshape(o.shape[:-2] + (d.value_dim,)))        # (..., D)


# --- DeltaNet ------------------------------------------------------------------------------------------------------------
def _dims(dim: int, spec) -> Dims:
    """spec: heads, head_dim (key = value head dim), conv (0 = no short conv), gate (bool)."""
    head_dim = int(spec.head_dim)
    return family_dims("DeltaNet", dim, int(spec.heads), head_dim, head_dim, int(spec.conv), bool(spec.gate),
                       eps=out_norm_eps(spec))


def init(dim: int, spec, *, key) -> dict[str, jax.Array]:
    """Parameters named and shaped as the torch layer's state_dict (same order)."""
    d = _dims(dim, spec)
    kq, kk, kv, kb, kc, ko = jax.random.split(key, 6)
    p = {"q_proj.weight": linear_init(kq, d.key_dim, dim), "k_proj.weight": linear_init(kk, d.key_dim, dim),
         "v_proj.weight": linear_init(kv, d.value_dim, dim), "b_proj.weight": linear_init(kb, d.heads, dim)}
    return p | family_init_convs(d, key=kc) | family_init_output(dim, d, key=ko)


def init_state(dim: int, spec, batch_size: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    return family_init_state(_dims(dim, spec), batch_size, dtype)


def apply(params, x, spec, state=None, ctx=None):
    """x (B, L, D) -> (y (B, L, D), new_state or None)."""
    d = _dims(x.shape[-1], spec)
    q, k, v, conv_state = family_qkv(params, x, d, state, step=False)                # (B, L, H, K/V)
    beta = jax.nn.sigmoid(linear(params, "b_proj", x))                               # (B, L, H)
    o, S = delta_rule(q, k, v, beta, initial_state=None if state is None else state["recurrent"],
                      output_final_state=state is not None)                          # (B, L, H, V)
    y = family_out(params, o, x, d)                                                  # (B, L, D)
    return y, (None if state is None else {**conv_state, "recurrent": S})


def step(params, x_t, spec, state, ctx=None):
    """x_t (B, D) -> (y_t (B, D), new_state)."""
    d = _dims(x_t.shape[-1], spec)
    q, k, v, conv_state = family_qkv(params, x_t, d, state, step=True)               # (B, H, K/V)
    beta = jax.nn.sigmoid(linear(params, "b_proj", x_t))                             # (B, H)
    o, S = delta_rule_step(q, k, v, beta, state["recurrent"])                        # (B, H, V)
    return family_out(params, o, x_t, d), {**conv_state, "recurrent": S}
