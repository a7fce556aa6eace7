"""Gated DeltaNet mixer layer (JAX).

Paper: Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule" (ICLR 2025,
arXiv:2412.06464).
Reference implementation: flash-linear-attention ``fla/layers/gated_deltanet.py`` (class ``GatedDeltaNet`` with
conv_bias=False, output_gate_activation='swish', norm_eps=1e-5); with v_heads > heads, q and k
are shared by the v_heads / heads value heads of a group (fla's GVA, transformers' ``Qwen3NextGatedDeltaNet``).
Mirrors hybridc_torch/layers/gated_delta_net.py: same parameter names, shapes and init distributions
(A_log ~ log U(0, 16), dt_bias = softplus^-1 of a log-uniform dt in [1e-3, 1e-1]) and the same math.

    q = l2norm(silu(conv_q(q_proj x)));  k = l2norm(silu(conv_k(k_proj x)));  v = silu(conv_v(v_proj x))
    g = -exp(A_log) * softplus(a_proj x + dt_bias)   (log decay, fp32);   beta = sigmoid(b_proj x)
    (neg_eigval, fla's allow_neg_eigval: beta = 2 sigmoid(b_proj x), Grazzi et al. 2025, arXiv:2411.12537)
    o = gated_delta_rule(q, k, v, g, beta);  y = o_proj(o_norm(o [, g_proj x]))

Dimension glossary:
    B batch, L sequence length, D model dim, H (key) heads, Hv value heads (v_heads), K key head dim (head_dim),
    V value head dim (v_head_dim, else head_dim * expand_v), W short-conv width.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..ops.gated_delta_rule import gated_delta_rule, gated_delta_rule_step
from .common import linear, linear_init
from .delta_net import (Dims, family_dims, family_init_convs, family_init_output, family_init_state, family_out,
                        family_qkv, out_norm_eps)

__all__ = ["init", "init_state", "apply", "step"]

OP = "gated_delta_rule"  # the recurrence it runs (describe --kernels)

DT_MIN, DT_MAX, DT_INIT_FLOOR = 1e-3, 1e-1, 1e-4


def _value_head_dim(head_dim: int, expand_v) -> int:
    head_v = int(head_dim * expand_v)
    if not math.isclose(head_dim * expand_v, head_v, rel_tol=1e-5):
        raise ValueError(f"GatedDeltaNet: head_dim * expand_v must be an integer, got {head_dim} * {expand_v}")
    return head_v


def _dims(dim: int, spec) -> Dims:
    """spec: heads, v_heads, head_dim, expand_v, v_head_dim (None: head_dim * expand_v), conv (0 = no short conv),
    gate (bool). (neg_eigval: _gates.)"""
    head_dim = int(spec.head_dim)
    head_v = int(spec.v_head_dim) if spec.v_head_dim else _value_head_dim(head_dim, spec.expand_v)
    return family_dims("GatedDeltaNet", dim, int(spec.heads), head_dim, head_v, int(spec.conv), bool(spec.gate),
                       v_heads=int(spec.v_heads), eps=out_norm_eps(spec))


def _init_decay(heads: int, *, key) -> dict[str, jax.Array]:
    ka, kd = jax.random.split(key)
    A = jax.random.uniform(ka, (heads,), jnp.float32, 0.0, 16.0)                          # (H,)
    log_dt = jax.random.uniform(kd, (heads,), jnp.float32) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)
    dt = jnp.maximum(jnp.exp(log_dt), DT_INIT_FLOOR)                                      # (H,)
    return {"A_log": jnp.log(A), "dt_bias": dt + jnp.log(-jnp.expm1(-dt))}                # softplus^-1(dt)


def init(dim: int, spec, *, key) -> dict[str, jax.Array]:
    """Parameters named and shaped as the torch layer's state_dict (same order)."""
    d = _dims(dim, spec)
    kq, kk, kv, ka, kb, kd, kc, ko = jax.random.split(key, 8)
    p = _init_decay(d.v_heads, key=kd)   # torch registers A_log, dt_bias directly on the module: they come first
    p |= {"q_proj.weight": linear_init(kq, d.key_dim, dim), "k_proj.weight": linear_init(kk, d.key_dim, dim),
          "v_proj.weight": linear_init(kv, d.value_dim, dim), "a_proj.weight": linear_init(ka, d.v_heads, dim),
          "b_proj.weight": linear_init(kb, d.v_heads, dim)}
    return p | family_init_convs(d, key=kc) | family_init_output(dim, d, key=ko)


def init_state(dim: int, spec, batch_size: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    return family_init_state(_dims(dim, spec), batch_size, dtype)


def _gates(params, x, neg_eigval: bool):
    """x (..., D) -> log decay g (..., Hv) in >= fp32 and beta (..., Hv)."""
    acc = jnp.promote_types(x.dtype, jnp.float32)
    a = linear(params, "a_proj", x).astype(acc) + params["dt_bias"].astype(acc)         # (..., Hv)
    g = -jnp.exp(params["A_log"].astype(acc)) * jax.nn.softplus(a)                      # (..., Hv)
    beta = jax.nn.sigmoid(linear(params, "b_proj", x))                                  # (..., Hv)
    return g, (2 * beta if neg_eigval else beta)


def apply(params, x, spec, state=None, ctx=None):
    """x (B, L, D) -> (y (B, L, D), new_state or None)."""
    d = _dims(x.shape[-1], spec)
    q, k, v, conv_state = family_qkv(params, x, d, state, step=False)                   # (B, L, Hv, K/V)
    g, beta = _gates(params, x, bool(spec.neg_eigval))                                  # (B, L, Hv)
    o, S = gated_delta_rule(q, k, v, g, beta, initial_state=None if state is None else state["recurrent"],
                            output_final_state=state is not None)                       # (B, L, Hv, V)
    y = family_out(params, o, x, d)                                                     # (B, L, D)
    return y, (None if state is None else {**conv_state, "recurrent": S})


def step(params, x_t, spec, state, ctx=None):
    """x_t (B, D) -> (y_t (B, D), new_state)."""
    d = _dims(x_t.shape[-1], spec)
    q, k, v, conv_state = family_qkv(params, x_t, d, state, step=True)                  # (B, Hv, K/V)
    g, beta = _gates(params, x_t, bool(spec.neg_eigval))                                # (B, Hv)
    o, S = gated_delta_rule_step(q, k, v, g, beta, state["recurrent"])                  # (B, Hv, V)
    return family_out(params, o, x_t, d), {**conv_state, "recurrent": S}
