"""Causal self-attention's scores, softmax and values, in JAX (what the attention layer runs over a full sequence).

Paper: Dao, "FlashAttention-2" (2023), Alg. 1-2; reference implementation: torch's CPU flash attention, which
``F.scaled_dot_product_attention`` runs on CPU (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp).

    y_i = sum_j softmax_j(s_ij) v_j over keys j <= i (and i - j < window),
    s_ij = scale * q_i . k_j, or softcap * tanh(scale * q_i . k_j / softcap) with a soft-cap (Gemma-2)

Implementations: ``naive.py`` (``impl="reference"``: the dense [L, L] masked form the layer always ran, the
oracle; what ``auto`` runs up to one block, 256 tokens, and off CPU); ``block.py`` (``impl="block"``: blockwise,
online softmax, only the key blocks a query block sees, a recomputing custom VJP: what ``auto`` picks on CPU past
one block); ``xla.py`` (``impl="xla"``: ``jax.nn.dot_product_attention``, which lowers on CPU but builds the dense
mask and scores, slower than the reference there; no soft-cap, then it falls back to the reference).
GQA's kv heads, RoPE, QK-norm and the projections stay in the layer (hybridc_jax/layers/attn.py); decoding with a
cache and meta tokens (a mask that is not causal-only) keep the layer's own masked form.

Glossary: B batch, H query heads, G kv heads (H % G == 0), L length (queries = keys), E head dim, Ev value head dim.
"""
from __future__ import annotations

import jax

from hybridc_native.choice import Op

from .block import BLOCK

__all__ = ["attention", "OP"]


def _auto(device: str) -> str:
    """CPU: the blockwise form; `attention` runs the reference instead for a sequence of one block (L <= BLOCK),
    where the blockwise form is the same dense product plus its loop (measured: benchmarks/attention.py, RESULTS.md
    "Issue 16: JAX attention"). Other devices keep the dense form they ran before (not measured there yet)."""
    return "block" if device == "cpu" else "reference"


OP = Op("attention", __name__, {"reference": "naive:reference", "block": "block:block_attention",
                                "xla": "xla:sdpa"}, auto=_auto)


def attention(q, k, v, scale: float, softcap: float | None = None, window: int | None = None, *, impl="auto"):
    """Causal self-attention: q (B, H, L, E), k (B, G, L, E), v (B, G, L, Ev) -> (B, H, L, Ev).

    scale: the score scale (the layer's 1/sqrt(E) or its `scale`); softcap: Gemma-2's soft-cap or None; window:
    keys i - window < j <= i, or None for global. impl: "auto", "block", "xla" or "reference"."""
    name, source = OP.resolve(impl, jax.default_backend())
    if source == "auto" and name == "block" and q.shape[2] <= BLOCK:  # one block: the dense form
        name = "reference"
    return OP.get(name)(q, k, v, scale, softcap, window)
