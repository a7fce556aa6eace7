"""Norms: the block norms of every mixer and FFN sub-block, the final norm, the parallel block's branch norms
(docs/layers.md, "The model around the layers").

`norm layer|rms eps=E zero_centered=true place=pre|post|both` sets them model-wide: `place` says how many norms a
sub-block has (pre: `norm` / `ffn_norm`; post: `post_norm` / `ffn_post_norm`; both: all four), `zero_centered`
changes no count (the weight is stored as w and applied as 1 + w).
"""
from __future__ import annotations


def norm_params(norm: str, dim: int) -> int:
    """LayerNorm has a weight and a bias, RMSNorm a weight."""
    return 2 * dim if norm == "layer" else dim


def sub_block_norms(place: str) -> int:
    """Norms around one sub-block (the mixer, or the FFN): one before or after it, or both (Gemma-2's sandwich)."""
    return 2 if place == "both" else 1
