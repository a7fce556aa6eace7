"""The delta rule on CPU (``impl="cpp"``, what ``auto`` picks on CPU when the C++ kernels library builds): the gated
delta rule's fused sequential C++ kernel (``gated_delta_rule/cpp.py``) with no gate.

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

from ..gated_delta_rule.cpp import gated_delta_rule_cpp

__all__ = ["delta_rule_cpp"]


def delta_rule_cpp(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=None):
    """The gated delta rule's fused C++ kernel with no gate (CPU; `chunk_size` ignored); raises if it cannot be
    built here."""
    return gated_delta_rule_cpp(q, k, v, None, beta, scale, initial_state, output_final_state)
