"""The delta rule on GPU (``impl="triton"``, what ``auto`` picks on CUDA when triton imports): the gated delta rule's
Triton kernels (``gated_delta_rule/triton.py``, read its docstring) with g = 0 (no decay).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

import torch

from ..gated_delta_rule.triton import triton_gated_delta_rule

__all__ = ["triton_delta_rule"]


def triton_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=64):
    """Delta rule by the Triton kernels: the gated kernels with g = 0 (no decay); same contract as
    ``naive.reference``."""
    g = torch.zeros(q.shape[:3], device=q.device, dtype=q.dtype)           # (B, T, H)
    return triton_gated_delta_rule(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size)
