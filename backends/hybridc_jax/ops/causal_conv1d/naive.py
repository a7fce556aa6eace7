"""The causal depthwise conv1d (+ bias, + optional silu), the reference (``impl="reference"``): K shifted
multiply-adds on the time-major layout (what ``layers/_conv.causal_conv1d_time_major`` runs), then silu.

Glossary of dimension letters:
    B: batch    L: sequence length    C: channels    K: conv width
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["reference", "new_state"]


def new_state(x, conv_state, K: int):
    """The last K-1 inputs after x (B, L, C), following conv_state (B, C, K-1) or zeros: (B, C, K-1) in x.dtype."""
    batch, length, channels = x.shape
    if conv_state is None:
        conv_state = jnp.zeros((batch, channels, K - 1), x.dtype)
    tail = x[:, max(0, length - (K - 1)):].transpose(0, 2, 1)  # (B, C, <= K-1)
    return jnp.concatenate([conv_state.astype(x.dtype), tail], axis=-1)[..., tail.shape[-1]:]


def reference(x, weight, bias=None, conv_state=None, activation=None):
    """x (B, L, C); weight (C, K); bias (C,); conv_state (B, C, K-1). Returns (y (B, L, C), new conv_state)."""
    batch, length, channels = x.shape
    keep = weight.shape[-1] - 1
    if conv_state is None:
        conv_state = jnp.zeros((batch, channels, keep), x.dtype)
    xp = jnp.concatenate([conv_state.astype(x.dtype).transpose(0, 2, 1), x], axis=1)  # (B, K-1+L, C)
    w = weight.astype(x.dtype)
    y = sum(w[:, k] * xp[:, k:k + length] for k in range(keep + 1))  # (B, L, C), cross-correlation
    if bias is not None:
        y = y + bias.astype(x.dtype)
    return (jax.nn.silu(y) if activation == "silu" else y), xp[:, xp.shape[1] - keep:].transpose(0, 2, 1)
