"""The gated group RMSNorm, the reference (``impl="reference"``, the oracle): the torch expression in fp32 (fp64 for
fp64 inputs).

Glossary of dimension letters:
    E: channels    G: groups (E / group_size)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["reference"]


def reference(y, z, weight, group_size: int, eps: float, norm_before_gate: bool = False):
    """y, z (..., E); weight (E,) or None (out = y * silu(z)). Returns (..., E) in y.dtype."""
    acc = torch.float64 if y.dtype == torch.float64 else torch.float32
    gate = F.silu(z.to(acc))  # (..., E)
    if weight is None:
        return (y.to(acc) * gate).to(y.dtype)
    h = y.to(acc) if norm_before_gate else y.to(acc) * gate  # (..., E)
    hg = h.unflatten(-1, (-1, group_size))  # (..., G, E/G)
    hg = hg * torch.rsqrt(hg.pow(2).mean(-1, keepdim=True) + eps)
    out = weight * hg.flatten(-2)  # (..., E)
    return (out * gate if norm_before_gate else out).to(y.dtype)
