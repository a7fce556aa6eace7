"""The delta rule, chunked (``impl="chunk"``) and the scan forward with its backward (``impl="scan_chunk"``).

The chunked WY / UT-transform form is the gated delta rule's with no decay
(``gated_delta_rule/chunk.py::chunk_delta_core``); ``impl="scan_chunk"`` (what ``auto`` picks where the C++ kernel
is unavailable): the reference's forward when not differentiated, the chunked form under ``jax.grad``
(``.._chunk.scan_forward_chunk_backward``).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

from .._chunk import scan_forward_chunk_backward
from ..gated_delta_rule.chunk import chunk_delta_core
from .naive import reference

__all__ = ["chunk_delta_rule", "scan_chunk_delta_rule"]


def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=64):
    """Chunked delta rule (WY / UT-transform form, chunk 64 by default); same contract as ``reference``.

    Shares its core with the gated delta rule (``gated_delta_rule.chunk.chunk_delta_core`` with no decay).
    """
    return chunk_delta_core(q, k, v, None, beta, scale, initial_state, output_final_state, chunk_size)


def scan_chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                          chunk_size=64):
    """Values from the ``lax.scan`` reference, gradients from the chunked form (see
    ``.._chunk.scan_forward_chunk_backward``)."""
    return scan_forward_chunk_backward(
        lambda *a: reference(*a[:4], scale, a[4], output_final_state),
        lambda *a: chunk_delta_core(*a[:3], None, a[3], scale, a[4], output_final_state, chunk_size),
        q, k, v, beta, initial_state)
