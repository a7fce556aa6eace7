"""The causal depthwise convolution over time with a decode state: Mamba-1, Mamba-2, Griffin's ``Conv1D`` and the
DeltaNet family's short convolutions all run it.

    y_t = bias + sum_{j<K} weight[:, j] * x_{t-K+1+j}        # the K-1 inputs before t = 0 come from the state

The state holds the last K-1 inputs, channel-major (B, C, K-1), zeros before the first token (as mamba_ssm's
``causal_conv1d`` and its decode ``conv_state``).

Glossary of dimension letters:
    B: batch    C: channels    L: sequence length    K: conv width
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["causal_conv1d", "causal_conv1d_step"]


def causal_conv1d(x, weight, bias=None, conv_state=None):
    """Causal depthwise conv over time, continuing from `conv_state` (the previous K-1 inputs, zeros if None).

    x (B, C, L); weight (C, K); bias (C,); conv_state (B, C, K-1).
    Returns (y (B, C, L), new_conv_state (B, C, K-1)) -- the last K-1 inputs seen, in x's dtype.
    """
    batch, channels, _ = x.shape
    keep = weight.shape[-1] - 1
    if conv_state is None:
        conv_state = x.new_zeros(batch, channels, keep)
    xp = torch.cat([conv_state.to(x.dtype), x], dim=-1)  # (B, C, K-1+L)
    if x.shape[-1] == 0:
        return x, xp
    y = F.conv1d(xp, weight[:, None, :].to(x.dtype), None if bias is None else bias.to(x.dtype),
                 groups=channels)  # (B, C, L)
    return y, xp[..., xp.shape[-1] - keep:]


def causal_conv1d_step(x_t, weight, bias, conv_state):
    """One step as an elementwise product and sum (no conv launch). x_t (B, C); weight (C, K); bias (C,) or None;
    conv_state (B, C, K-1). Returns (y_t (B, C), new conv_state (B, C, K-1)); conv_state is not mutated."""
    xp = torch.cat([conv_state.to(x_t.dtype), x_t[..., None]], dim=-1)   # (B, C, K)
    y = (xp * weight).sum(-1)                                             # (B, C)
    if bias is not None:
        y = y + bias
    return y, xp[..., 1:]                                                 # (B, C), (B, C, K-1)
