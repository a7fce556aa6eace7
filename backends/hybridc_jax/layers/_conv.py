"""Causal depthwise convolutions over time with a decode state, shared by the Mamba, Mamba-2, Griffin and DeltaNet
family layers (JAX). Mirrors the causal ``nn.Conv1d(groups=channels, padding=K-1)`` of mamba_ssm's ``Mamba`` /
``Mamba2`` (state-spaces/mamba), recurrentgemma's ``Conv1D`` and fla's ``ShortConvolution``.

    y_t = bias + sum_{k<K} weight[:, k] * x_{t-K+1+k}        # cross-correlation; zero history before t = 0

The decode state keeps exactly the last K-1 inputs, channel-major (B, C, K-1) in every layout.

Glossary of dimension letters:
    B: batch    L: sequence length    C: channels    K: conv width
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..ops.causal_conv1d.naive import reference as conv_reference

__all__ = ["causal_conv1d", "causal_conv1d_time_major", "causal_conv1d_step", "conv_init"]


def causal_conv1d(x, weight, bias=None, conv_state=None):
    """Causal depthwise conv over time, continuing from `conv_state` (the previous K-1 inputs, zeros if None).

    x (B, C, L); weight (C, K); bias (C,); conv_state (B, C, K-1).
    Returns (y (B, C, L), new_conv_state (B, C, K-1)) -- the last K-1 inputs seen, in x's dtype.
    """
    batch, channels, length = x.shape
    width = weight.shape[-1]
    keep = width - 1
    if conv_state is None:
        conv_state = jnp.zeros((batch, channels, keep), x.dtype)
    xp = jnp.concatenate([conv_state.astype(x.dtype), x], axis=-1)  # (B, C, K-1+L)
    w = weight.astype(x.dtype)
    y = sum(w[None, :, k, None] * xp[..., k:k + length] for k in range(width))  # (B, C, L), cross-correlation
    if bias is not None:
        y = y + bias.astype(x.dtype)[None, :, None]
    return y, xp[..., xp.shape[-1] - keep:]


def causal_conv1d_time_major(x, weight, bias=None, conv_state=None):
    """`causal_conv1d` on time-major x (B, L, C): y (B, L, C) and the new state, channel-major (B, C, K-1) as ever.

    For layers whose neighbours are time-major (Mamba-2, Griffin, the DeltaNet family's short convs): only the
    small state is transposed. XLA:CPU ran the channel-major route (two [B, C, L] transposes and their gradients)
    ~1.5x slower in a DeltaNet layer's forward+backward outside the recurrence (275 vs 158 ms, B4 L1024).
    """
    return conv_reference(x, weight, bias, conv_state)  # the causal_conv1d op's reference: K shifted multiply-adds


def causal_conv1d_step(x_t, weight, bias=None, conv_state=None):
    """One decoding step: x_t (B, C); weight (C, K); bias (C,); conv_state (B, C, K-1) (zeros if None).

    Returns (y_t (B, C), new_conv_state (B, C, K-1)) in x_t's dtype; one reduction over the K taps.
    """
    if conv_state is None:
        conv_state = jnp.zeros(x_t.shape + (weight.shape[-1] - 1,), x_t.dtype)
    xp = jnp.concatenate([conv_state.astype(x_t.dtype), x_t[..., None]], axis=-1)  # (B, C, K)
    y = (xp * weight.astype(x_t.dtype)).sum(-1)  # (B, C)
    if bias is not None:
        y = y + bias.astype(x_t.dtype)
    return y, xp[..., 1:]


def conv_init(key, channels: int, width: int) -> tuple[jax.Array, jax.Array]:
    """nn.Conv1d(groups=channels) default init: weight (C, 1, K) and bias (C,) ~ U(-1/sqrt(K), 1/sqrt(K))."""
    kw, kb = jax.random.split(key)
    bound = 1.0 / math.sqrt(width)
    return (jax.random.uniform(kw, (channels, 1, width), jnp.float32, -bound, bound),
            jax.random.uniform(kb, (channels,), jnp.float32, -bound, bound))
