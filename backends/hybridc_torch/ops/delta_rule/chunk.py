"""The delta rule, chunked (``impl="chunk"``; what ``auto`` picks on CPU when the C++ kernels cannot be built): the
gated delta rule's WY / UT-transform core (``gated_delta_rule/chunk.py``) with no decay.

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

from ..gated_delta_rule.chunk import chunk_delta_core

__all__ = ["chunk_delta_rule"]


def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=64):
    """Chunked delta rule (WY / UT-transform form, chunk 64 by default); same contract as ``naive.reference``.

    Shares its core with the gated delta rule (``gated_delta_rule.chunk.chunk_delta_core`` with no decay).
    """
    return chunk_delta_core(q, k, v, None, beta, scale, initial_state, output_final_state, chunk_size)
