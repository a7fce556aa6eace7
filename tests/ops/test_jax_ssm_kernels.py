"""Parity of the JAX SSM kernels (selective_scan, ssd, linear_recurrence and their steps) with the torch references
on the same random inputs.

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels    N: state size    G: groups    H: heads    P: head dim
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

# the op packages (entry point, step, reference); `from hybridc_jax.ops import ssd` gives the entry callable itself
jlr, jss, jssd = (importlib.import_module(f"hybridc_jax.ops.{op}")
                  for op in ("linear_recurrence", "selective_scan", "ssd"))
tlr, tss, tssd = (importlib.import_module(f"hybridc_torch.ops.{op}")
                  for op in ("linear_recurrence", "selective_scan", "ssd"))

BATCH = 2


def rand(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def close(a, b, tol=1e-4):
    """Values equal to `tol`, relative to the scale of `b` (elementwise rtol plus an atol of tol * max|b|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(np.abs(b).max(initial=0.0), 1e-6))


# ------------------------------------------------------------------------------------------------ kernels
def _tj(d: dict):
    """The same inputs as torch tensors and jax arrays (None stays None)."""
    return ({k: None if v is None else torch.from_numpy(v) for k, v in d.items()},
            {k: None if v is None else jnp.asarray(v) for k, v in d.items()})


def _ss_inputs(length, groups, full):
    b, d, n = BATCH, 8, 4
    bc = (b, n, length) if groups is None else (b, groups, n, length)
    return dict(u=rand(b, d, length, seed=1), delta=0.5 * rand(b, d, length, seed=2),
                A=-np.abs(rand(d, n, seed=3)) - 0.1, B=rand(*bc, seed=4), C=rand(*bc, seed=5),
                D=rand(d, seed=6) if full else None, z=rand(b, d, length, seed=7) if full else None,
                delta_bias=0.3 * rand(d, seed=8) if full else None,
                initial_state=rand(b, d, n, seed=9) if full else None)


@pytest.mark.parametrize("length", [0, 6], ids=lambda n: f"L{n}")
@pytest.mark.parametrize("groups,full", [(None, True), (2, True), (None, False)], ids=["BC", "grouped-BC", "bare"])
def test_selective_scan_matches_torch(groups, full, length):
    t, j = _tj(_ss_inputs(length, groups, full))
    t_out, t_last = tss.selective_scan(**t, delta_softplus=full, return_last_state=True)
    j_out, j_last = jss.selective_scan(**j, delta_softplus=full, return_last_state=True)
    close(j_out, t_out.numpy())
    close(j_last, t_last.numpy())
    assert jss.selective_scan(**j, delta_softplus=full).shape == j_out.shape


@pytest.mark.parametrize("groups", [None, 2], ids=["BC", "grouped-BC"])
def test_selective_scan_step_matches_torch(groups):
    t, j = _tj(_ss_inputs(1, groups, True))
    args = lambda d: (d["initial_state"], d["u"][..., 0], d["delta"][..., 0], d["A"], d["B"][..., 0],  # noqa: E731
                      d["C"][..., 0], d["D"], d["z"][..., 0], d["delta_bias"], True)
    for jv, tv in zip(jss.selective_scan_step(*args(j)), tss.selective_scan_step(*args(t))):
        close(jv, tv.numpy())


def _ssd_inputs(length, d_shape, full):
    b, h, p, g, n = BATCH, 4, 3, 2, 5
    return dict(x=rand(b, length, h, p, seed=1), dt=0.5 * rand(b, length, h, seed=2), A=-np.abs(rand(h, seed=3)) - 0.1,
                B=rand(b, length, g, n, seed=4), C=rand(b, length, g, n, seed=5),
                D=rand(*d_shape, seed=6) if full else None, z=rand(b, length, h, p, seed=7) if full else None,
                dt_bias=0.3 * rand(h, seed=8) if full else None,
                initial_states=rand(b, h, p, n, seed=9) if full else None)


@pytest.mark.parametrize("length", [0, 6], ids=lambda n: f"L{n}")
@pytest.mark.parametrize("d_shape,full", [((4,), True), ((4, 3), True), ((4,), False)],
                         ids=["D-per-head", "D-per-channel", "bare"])
def test_ssd_matches_torch(d_shape, full, length):
    t, j = _tj(_ssd_inputs(length, d_shape, full))
    t_y, t_final = tssd.ssd(**t, chunk_size=4, dt_softplus=full, return_final_states=True)
    j_y, j_final = jssd.ssd(**j, chunk_size=4, dt_softplus=full, return_final_states=True)
    close(j_y, t_y.numpy())
    close(j_final, t_final.numpy())
    assert jssd.ssd(**j, chunk_size=4).shape == j_y.shape


def test_ssd_step_matches_torch():
    t, j = _tj(_ssd_inputs(1, (4, 3), True))
    args = lambda d: (d["initial_states"], d["x"][:, 0], d["dt"][:, 0], d["A"], d["B"][:, 0], d["C"][:, 0],  # noqa: E731
                      d["D"], d["z"][:, 0], d["dt_bias"], True)
    for jv, tv in zip(jssd.ssd_step(*args(j)), tssd.ssd_step(*args(t))):
        close(jv, tv.numpy())


@pytest.mark.parametrize("with_h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("length", [0, 6], ids=lambda n: f"L{n}")
def test_linear_recurrence_matches_torch(length, with_h0):
    a = 1 / (1 + np.exp(-rand(BATCH, length, 8, seed=1)))
    t, j = _tj(dict(a=a, x=rand(BATCH, length, 8, seed=2), initial_state=rand(BATCH, 8, seed=3) if with_h0 else None))
    for jv, tv in zip(jlr.linear_recurrence(**j), tlr.linear_recurrence(**t)):
        close(jv, tv.numpy())
    h = j["initial_state"] if with_h0 else jnp.zeros((BATCH, 8))
    for s in range(length):
        h = jlr.linear_recurrence_step(h, j["a"][:, s], j["x"][:, s])
    close(h, tlr.linear_recurrence(**t)[1].numpy())


def test_kernels_reject_unknown_impl_and_jit():
    t, j = _tj(_ss_inputs(3, None, False))
    with pytest.raises(ValueError, match=r"'auto', 'reference'"):
        jss.selective_scan(**j, impl="cuda")
    with pytest.raises(ValueError, match=r"'auto', 'reference'"):
        jssd.ssd(**_tj(_ssd_inputs(3, (4,), False))[1], chunk_size=4, impl="triton")
    with pytest.raises(ValueError, match=r"'auto', 'reference'"):
        jlr.linear_recurrence(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 3)), impl="triton")
    fn = jax.jit(lambda d: jss.selective_scan(**d, impl="reference", return_last_state=True))
    for jv, tv in zip(fn(j), tss.selective_scan(**t, return_last_state=True)):
        close(jv, tv.numpy())
