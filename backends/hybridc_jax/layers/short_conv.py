"""LFM2's gated short convolution (``short_conv``), in JAX.

Reference implementation: transformers' ``Lfm2ShortConv`` (models/lfm2/modeling_lfm2.py), Liquid AI's LFM2. Mirrors
hybridc_torch/layers/short_conv.py (the same parameter names ``in_proj``, ``conv``, ``out_proj`` and math):
    [B, C, x] = in_proj(u)                   # (B, L, D) each, in that order
    y = out_proj(C * conv(B * x))            # conv: depthwise, causal, width K, no activation (``_shortconv``)
``bias`` puts a bias on all three. Decode state: the last K-1 inputs of the conv, B * x, channel-major (B, D, K-1).

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim    K: conv width
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _shortconv
from .common import bias_init, linear, linear_init

__all__ = ["init", "init_state", "apply", "step"]

KERNEL = ("conv1d", "a depthwise causal conv, no recurrence")  # no choice of implementation (describe --kernels)


def init(dim: int, spec, *, key) -> dict[str, jax.Array]:
    """Parameters named and shaped as the torch layer's state_dict (nn.Linear / nn.Conv1d default inits)."""
    k_conv, k_in, k_inb, k_out, k_outb = jax.random.split(key, 5)
    conv = _shortconv.init(dim, int(spec.conv), bias=spec.bias, key=k_conv)  # weight (D, 1, K)[, bias (D,)]
    params = {f"conv.{k}": v for k, v in conv.items()}
    params |= {"in_proj.weight": linear_init(k_in, 3 * dim, dim), "out_proj.weight": linear_init(k_out, dim, dim)}
    if spec.bias:
        params |= {"in_proj.bias": bias_init(k_inb, 3 * dim, dim), "out_proj.bias": bias_init(k_outb, dim, dim)}
    return params


def init_state(dim: int, spec, batch_size: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    return {"conv": _shortconv.init_state(dim, int(spec.conv), batch_size, dtype)}  # (B, D, K-1)


def _conv_params(params) -> dict:
    return {k[len("conv."):]: v for k, v in params.items() if k.startswith("conv.")}


def apply(params, x, spec, state=None, ctx=None):
    """x (B, L, D) -> (out (B, L, D), new_state or None)."""
    b, c, v = jnp.split(linear(params, "in_proj", x), 3, axis=-1)  # (B, L, D) each
    y, conv_state = _shortconv.apply(_conv_params(params), b * v, None if state is None else state["conv"],
                                     activation=None)  # (B, L, D), (B, D, K-1)
    out = linear(params, "out_proj", c * y)  # (B, L, D)
    if state is None:
        return out, None
    return out, {"conv": conv_state.astype(state["conv"].dtype)}


def step(params, x_t, spec, state, ctx=None):
    """x_t (B, D) -> (out_t (B, D), new_state)."""
    b, c, v = jnp.split(linear(params, "in_proj", x_t), 3, axis=-1)  # (B, D) each
    y, conv_state = _shortconv.step(_conv_params(params), b * v, state["conv"], activation=None)  # (B, D)
    return linear(params, "out_proj", c * y), {"conv": conv_state.astype(state["conv"].dtype)}
