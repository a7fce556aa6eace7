"""The delta rule, the fused sequential C++ CPU kernel as an XLA custom call (``impl="cpp"``; ``auto`` on CPU).

The gated delta rule's custom call with no gate (``gated_delta_rule/cpp.py``): the same kernel, a zero-size g.

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

from ..gated_delta_rule.cpp import gated_delta_rule_cpp

__all__ = ["delta_rule_cpp"]


def delta_rule_cpp(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=None):
    """The references' contract (`chunk_size` is ignored); CPU only, compiled on first use."""
    return gated_delta_rule_cpp(q, k, v, None, beta, scale, initial_state, output_final_state)
