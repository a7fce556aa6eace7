"""Norms: the pre-norms of every block and FFN, the final norm, the parallel block's branch norms (docs/layers.md)."""
from __future__ import annotations


def norm_params(norm: str, dim: int) -> int:
    """LayerNorm has a weight and a bias, RMSNorm a weight."""
    return 2 * dim if norm == "layer" else dim
