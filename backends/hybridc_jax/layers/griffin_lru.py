"""Griffin / Hawk recurrent block with the Real-Gated Linear Recurrent Unit (RG-LRU), in JAX.

Paper: De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models"
(2024), Sec. 2.4 and Fig. 2. Reference implementation: google-deepmind/recurrentgemma (recurrentgemma/jax/layers.py
``RGLRU``, ``Conv1D``, ``BlockDiagonalLinear``; modules.py ``RecurrentBlock``); parameter names and shapes follow its
torch port. Mirrors hybridc_torch/layers/griffin_lru.py (same parameters, inits and math).

    y   = gelu_tanh(linear_y(x))                        gate branch
    u   = conv_1d(linear_x(x))                          causal depthwise conv, width K
    i_t = sigmoid(input_gate(u_t)),  r_t = sigmoid(a_gate(u_t))       block-diagonal (heads blocks)
    log a_t = -8 * r_t * softplus(a_param)
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * u_t)     at absolute position 0: h_0 = i_0 * u_0
    out = linear_out(h * y)

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim    W: recurrence width    M: heads (blocks)    K: conv width
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..ops.linear_recurrence import linear_recurrence, linear_recurrence_step
from ._conv import causal_conv1d, causal_conv1d_time_major
from .common import linear, recurrent_dtype

__all__ = ["init", "init_state", "apply", "step", "sqrt_bound_derivative", "block_diagonal_linear"]

OP = "linear_recurrence"  # the recurrence it runs (describe --kernels)

C_EXPONENT = 8.0          # the constant c in log a_t = -c * r_t * softplus(a_param)
MAX_SQRT_GRADIENT = 1000.0


@jax.custom_vjp
def sqrt_bound_derivative(x):
    """sqrt(x) whose gradient is clipped at MAX_SQRT_GRADIENT (recurrentgemma's ``sqrt_bound_derivative``)."""
    return jnp.sqrt(x)


def _sqrt_fwd(x):
    return jnp.sqrt(x), x


def _sqrt_bwd(x, grad_output):
    return (grad_output / jnp.sqrt(jnp.maximum(4.0 * x, 1.0 / MAX_SQRT_GRADIENT ** 2)),)


sqrt_bound_derivative.defvjp(_sqrt_fwd, _sqrt_bwd)


def block_diagonal_linear(params, prefix: str, x):
    """y = x W_blockdiag + b; w (M, W/M, W/M), b (M, W/M) under `prefix.w`, `prefix.b`. x (..., W) -> (..., W)."""
    w, b = params[f"{prefix}.w"], params[f"{prefix}.b"]
    xb = x.reshape(x.shape[:-1] + w.shape[:2])  # (..., M, W/M)
    return (jnp.einsum("...hi,hij->...hj", xb, w.astype(x.dtype)) + b.astype(x.dtype)).reshape(x.shape)


def _dims(spec) -> tuple[int, int, int]:
    """(W, M, K) from the spec: width (W), heads (M), conv (K)."""
    W, M, K = int(spec.width), int(spec.heads), int(spec.conv)
    if W % M:
        raise ValueError(f"griffin_lru: width={W} must be divisible by heads={M}")
    return W, M, K


def init(dim: int, spec, *, key) -> dict[str, jax.Array]:
    """recurrentgemma's inits, under the torch layer's state_dict names (same order)."""
    W, M, K = _dims(spec)
    k = jax.random.split(key, 7)
    normal = lambda key, shape, var: jax.random.normal(key, shape, jnp.float32) * math.sqrt(var)  # noqa: E731
    r2 = jax.random.uniform(k[4], (W,), jnp.float32, 0.9 ** 2 + 1e-8, 0.999 ** 2 + 1e-8)  # ring radius^2
    return {
        "linear_y.weight": normal(k[0], (W, dim), 1.0 / dim), "linear_y.bias": jnp.zeros((W,)),
        "linear_x.weight": normal(k[1], (W, dim), 1.0 / dim), "linear_x.bias": jnp.zeros((W,)),
        "linear_out.weight": normal(k[2], (dim, W), 1.0 / W), "linear_out.bias": jnp.zeros((dim,)),
        "conv_1d.w": normal(k[3], (K, W), 0.01 / K), "conv_1d.b": jnp.zeros((W,)),
        "rg_lru.a_param": jnp.log(jnp.expm1(-0.5 * jnp.log(r2))),  # softplus^-1(-log r)
        "rg_lru.input_gate.w": normal(k[5], (M, W // M, W // M), M / W), "rg_lru.input_gate.b": jnp.zeros((M, W // M)),
        "rg_lru.a_gate.w": normal(k[6], (M, W // M, W // M), M / W), "rg_lru.a_gate.b": jnp.zeros((M, W // M)),
    }


def init_state(dim: int, spec, batch_size: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    W, _, K = _dims(spec)
    return {
        "conv": jnp.zeros((batch_size, W, K - 1), dtype),  # (B, W, K-1)
        "h": jnp.zeros((batch_size, W), recurrent_dtype(dtype)),  # (B, W)
        "pos": jnp.zeros((batch_size,), jnp.int32),  # (B,) tokens seen so far
    }


def _gates(params, u, reset):
    """u (..., W); reset (...,) bool -> decay a (..., W) and normalized input (..., W), both in fp32."""
    acc = recurrent_dtype(u.dtype)
    gate_x = jax.nn.sigmoid(block_diagonal_linear(params, "rg_lru.input_gate", u)).astype(acc)
    gate_a = jax.nn.sigmoid(block_diagonal_linear(params, "rg_lru.a_gate", u)).astype(acc)
    log_a = -C_EXPONENT * gate_a * jax.nn.softplus(params["rg_lru.a_param"].astype(acc))  # (..., W)
    multiplier = sqrt_bound_derivative(1.0 - jnp.exp(2.0 * log_a))  # (..., W)
    keep = (~reset)[..., None]
    multiplier = jnp.where(keep, multiplier, jnp.ones_like(multiplier))
    a = jnp.exp(log_a) * keep  # reset zeroes the decay, as recurrentgemma's rnn_scan does
    return a, u.astype(acc) * gate_x * multiplier


def _conv(params, x, conv_state):
    """x (B, W, L); conv_state (B, W, K-1) -> (y (B, W, L), new_conv_state); w[K-1] multiplies the current input."""
    return causal_conv1d(x, params["conv_1d.w"].T, params["conv_1d.b"], conv_state)


def _start(x, state, ctx) -> jax.Array:
    """Absolute position (B,) int32 of the first token of x; ctx["pos_offset"] may be an int or a traced scalar."""
    ctx = ctx or {}
    if "pos_offset" in ctx:
        return jnp.broadcast_to(jnp.asarray(ctx["pos_offset"], jnp.int32), x.shape[:1])
    if state is not None:
        return state["pos"].astype(jnp.int32)
    return jnp.zeros(x.shape[:1], jnp.int32)


def apply(params, x, spec, state=None, ctx=None):
    """x (B, L, D) -> (out (B, L, D), new_state or None). Resets the RG-LRU at absolute position 0 only."""
    length = x.shape[1]
    start = _start(x, state, ctx)  # (B,)
    reset = (start[:, None] + jnp.arange(length, dtype=jnp.int32)) == 0  # (B, L)
    gate = jax.nn.gelu(linear(params, "linear_y", x), approximate=True)  # (B, L, W)
    conv_in = None if state is None else state["conv"]
    u, conv_state = causal_conv1d_time_major(linear(params, "linear_x", x), params["conv_1d.w"].T, params["conv_1d.b"],
                                             conv_in)  # (B, L, W)
    a, xn = _gates(params, u, reset)  # (B, L, W) each
    h, h_last = linear_recurrence(a, xn, None if state is None else state["h"])
    out = linear(params, "linear_out", h.astype(x.dtype) * gate)  # (B, L, D)
    if state is None:
        return out, None
    return out, {"conv": conv_state.astype(state["conv"].dtype), "h": h_last, "pos": start + length}


def step(params, x_t, spec, state, ctx=None):
    """x_t (B, D) -> (out_t (B, D), new_state)."""
    start = _start(x_t, state, ctx)  # (B,)
    gate = jax.nn.gelu(linear(params, "linear_y", x_t), approximate=True)  # (B, W)
    u, conv_state = _conv(params, linear(params, "linear_x", x_t)[..., None], state["conv"])  # (B, W, 1)
    a, xn = _gates(params, u[..., 0], start == 0)  # (B, W) each
    h = linear_recurrence_step(state["h"], a, xn)  # (B, W)
    out = linear(params, "linear_out", h.astype(x_t.dtype) * gate)  # (B, D)
    return out, {"conv": conv_state.astype(state["conv"].dtype), "h": h, "pos": start + 1}
