"""Diagonal linear recurrence h_t = a_t * h_{t-1} + x_t, the sequential reference (``impl="reference"``, the oracle)
and the decoding step: a loop with an fp32 accumulator, outputs cast back to x's dtype (as recurrentgemma's
``rnn_scan``, recurrentgemma/torch/layers.py).

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels
"""

from __future__ import annotations

import torch

__all__ = ["linear_recurrence_step", "reference"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def linear_recurrence_step(h, a_t, x_t):
    """One step: returns the new state a_t * h + x_t (B, D) in the accumulation dtype; `h` is not mutated."""
    acc = _acc_dtype(x_t.dtype)
    return a_t.to(acc) * h.to(acc) + x_t.to(acc)  # (B, D)


def reference(a, x, initial_state=None):
    """Sequential oracle. a, x (B, L, D); initial_state (B, D). Returns (h (B, L, D) in x.dtype, h_last (B, D) fp32)."""
    batch, length, channels = x.shape
    acc = _acc_dtype(x.dtype)
    h = initial_state.to(acc) if initial_state is not None else x.new_zeros(batch, channels, dtype=acc)  # (B, D)
    hs = []
    for t in range(length):
        h = linear_recurrence_step(h, a[:, t], x[:, t])  # (B, D)
        hs.append(h)
    out = torch.stack(hs, dim=1) if hs else x.new_zeros(batch, 0, channels, dtype=acc)  # (B, L, D)
    return out.to(x.dtype), h
