"""The readable grouped matmul: a loop over groups, each group's weight applied to every row and kept where the row
belongs to the group (a mask). G times the work of the grouped forms: the oracle for tests, never a fast path."""
from __future__ import annotations

import jax.numpy as jnp


def reference(x, w, group_sizes):
    """x (M, K) sorted by group, w (G, N, K), group_sizes (G,) -> y (M, N); rows past sum(group_sizes) give 0."""
    ends = jnp.cumsum(group_sizes)  # (G,)
    row = jnp.arange(x.shape[0])  # (M,)
    y = jnp.zeros((x.shape[0], w.shape[1]), jnp.result_type(x, w))
    for g in range(w.shape[0]):
        mask = (row >= ends[g] - group_sizes[g]) & (row < ends[g])  # (M,) rows of group g
        y = jnp.where(mask[:, None], x @ w[g].T, y)  # (M, N)
    return y
