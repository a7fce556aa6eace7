"""The grouped matmul as XLA's ragged dot (``jax.lax.ragged_dot_general``), the weight read in its (G, N, K) layout
(no transpose): a grouped kernel on GPU/TPU; on CPU XLA lowers it to the dense masked form (G times the work)."""
from __future__ import annotations

import jax

_DIMS = jax.lax.RaggedDotDimensionNumbers(dot_dimension_numbers=(([1], [2]), ([], [])), lhs_ragged_dimensions=[0],
                                          rhs_group_dimensions=[0])


def ragged_matmul(x, w, group_sizes):
    """x (M, K) sorted by group, w (G, N, K), group_sizes (G,) -> y (M, N)."""
    return jax.lax.ragged_dot_general(x, w.astype(x.dtype), group_sizes.astype(jax.numpy.int32), _DIMS)
