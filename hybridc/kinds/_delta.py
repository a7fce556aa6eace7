"""Shared shapes of the delta-rule family (delta_net, gated_delta_net): q/k/v short convolutions and the [K, V] state.

flash-linear-attention's DeltaNet and GatedDeltaNet layers convolve q, k (H*K channels each) and v (H*V) with
depthwise short convolutions without bias; the decode state is their windows plus one [K, V] state per head.
"""
from __future__ import annotations

import math


def conv_channels(kd: int, vd: int) -> int:
    return 2 * kd + vd


def value_head_dim(head_dim: int, expand_v) -> int:
    head_v = int(head_dim * expand_v)
    if head_v <= 0 or not math.isclose(head_dim * expand_v, head_v, rel_tol=1e-5):
        raise ValueError(f"head_dim * expand_v must be a positive integer, got {head_dim} * {expand_v!r}")
    return head_v


def head_dim_auto(out: dict, heads: int, dim: int) -> None:
    """`head_dim=auto`: dim // heads (dim must divide)."""
    if out.get("head_dim") == "auto":
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads} (needed for head_dim='auto')")
        out["head_dim"] = dim // heads


def state_numel(heads: int, K: int, V: int, conv: int, v_heads: int = 0) -> int:
    """The q/k/v conv windows and one [K, V] state per value head (`v_heads`, 0: as many as heads)."""
    v_heads = v_heads or heads
    return conv_channels(heads * K, v_heads * V) * max(conv - 1, 0) + v_heads * K * V
