"""The JAX kernels' partial-gradient sum (hybridc_jax/ops/_reduce.py): a tree of adds equal to `jnp.sum`."""
from __future__ import annotations

import numpy as np
import pytest

jnp = pytest.importorskip("jax.numpy")

from hybridc_jax.ops._reduce import sum_axis  # noqa: E402


@pytest.mark.parametrize("shape, axis", [((2, 1, 8, 16, 4), 2), ((2, 3, 7, 5), 2), ((5, 3), 0), ((3, 5), -1),
                                         ((2, 1, 6), 1), ((2, 0, 6), 1), ((2, 80, 3), 1)],
                         ids=lambda v: str(v).replace(" ", ""))
def test_sum_axis_equals_sum(shape, axis):
    x = np.random.RandomState(0).randn(*shape).astype(np.float32)
    got = sum_axis(jnp.asarray(x), axis)
    assert got.shape == np.sum(x, axis).shape
    np.testing.assert_allclose(np.asarray(got), np.sum(x.astype(np.float64), axis), rtol=1e-5, atol=1e-5)
