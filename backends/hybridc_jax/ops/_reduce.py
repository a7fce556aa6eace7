"""A sum over one axis as a pairwise tree of adds, for the kernels' per-task partial gradients.

Why: XLA:CPU reduces a non-minor axis with a large minor extent slowly; the C++ kernels' backward returns partials
with such an axis (the SSD's dB, dC per head (B, G, heads per group, L, N), the selective scan's per task). Measured
(one thread): (2, 1, 8, 1024, 64) summed over its 8: `sum` 9 ms, the tree 0.1 ms; over 80: 86 ms and 3.7 ms.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

__all__ = ["sum_axis"]


def sum_axis(x, axis: int):
    """x summed over `axis` (removed), by halving: x[:k/2] + x[k/2:k] (an odd last slice carried) until one is left."""
    axis = axis % x.ndim
    while x.shape[axis] > 1:
        k, half = x.shape[axis], x.shape[axis] // 2
        pair = lax.slice_in_dim(x, 0, half, axis=axis) + lax.slice_in_dim(x, half, 2 * half, axis=axis)
        x = jnp.concatenate([pair, lax.slice_in_dim(x, 2 * half, k, axis=axis)], axis) if k % 2 else pair
    return jnp.squeeze(x, axis) if x.shape[axis] == 1 else x.sum(axis)  # an empty axis: zeros
