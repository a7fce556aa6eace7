"""The causal depthwise conv1d (+ bias, + optional silu), the reference (``impl="reference"``, the oracle): torch's
F.conv1d over the channel-major layout with the conv state concatenated in front.

Glossary of dimension letters:
    B: batch    L: sequence length    C: channels    K: conv width
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["reference", "new_state"]


def new_state(x, conv_state, K: int):
    """The last K-1 inputs after x (B, L, C), following conv_state (B, C, K-1) or zeros: (B, C, K-1) in x.dtype."""
    batch, length, channels = x.shape
    if conv_state is None:
        conv_state = x.new_zeros(batch, channels, K - 1)
    tail = x[:, max(0, length - (K - 1)):].transpose(1, 2)  # (B, C, <= K-1)
    return torch.cat([conv_state.to(x.dtype), tail], dim=-1)[..., tail.shape[-1]:] if K > 1 else tail[..., :0]


def reference(x, weight, bias=None, conv_state=None, activation=None):
    """x (B, L, C); weight (C, K); bias (C,); conv_state (B, C, K-1). Returns (y (B, L, C), new conv_state)."""
    batch, length, channels = x.shape
    K = weight.shape[-1]
    xc = x.transpose(1, 2)  # (B, C, L)
    state = x.new_zeros(batch, channels, K - 1) if conv_state is None else conv_state.to(x.dtype)
    xp = torch.cat([state, xc], dim=-1)  # (B, C, K-1+L)
    if length == 0:
        return x, xp
    y = F.conv1d(xp, weight[:, None, :].to(x.dtype), None if bias is None else bias.to(x.dtype), groups=channels)
    if activation == "silu":
        y = F.silu(y)
    return y.transpose(1, 2), xp[..., xp.shape[-1] - (K - 1):]  # (B, L, C), (B, C, K-1)
