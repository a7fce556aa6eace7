"""The standalone MLP layer kind (``mlp``, Megatron-LM's pattern symbol ``-``), in JAX: a pre-norm feed-forward
layer with no sequence mixing, the FFN sub-block's math and parameters (``ffn.py``: ``up`` -> act -> ``down``, or
swiglu). Mirrors hybridc_torch's mlp layer (the same names and shapes).

Dimension glossary:
    B batch, L sequence length, D model dim, F hidden size (int(mult * D)).
"""
from __future__ import annotations

from .ffn import apply, init, init_state, step

__all__ = ["init", "init_state", "apply", "step"]

KERNEL = (None, "no recurrence")  # nothing to choose (describe --kernels)
