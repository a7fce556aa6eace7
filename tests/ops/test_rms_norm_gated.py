"""rms_norm_gated's fused C++ CPU kernel (``impl="cpp"``) in both backends against the reference: the output and the
gradient of y, z and the weight, for the norm after the gate (Mamba-2's default), before it (norm_before_gate) and the
gate alone (no norm); one group and several; 1, 7 and 33 rows; widths not a multiple of the vector width; z as a
slice of a wider projection (the Mamba-2 layer's view); fp64. JAX: values and jax.grad.

Glossary of dimension letters:
    R: rows    E: channels    G: groups
"""
import numpy as np
import pytest
import torch

from hybridc_jax.ops.rms_norm_gated import OP as JAX_OP
from hybridc_jax.ops.rms_norm_gated import rms_norm_gated as jax_norm
from hybridc_torch.ops.rms_norm_gated import OP as TORCH_OP
from hybridc_torch.ops.rms_norm_gated import rms_norm_gated as torch_norm
from ops._jax_checks import needs_jax_cpp
from ops._torch_checks import compare, needs_torch_cpp

MODES = ["after-gate", "before-gate", "gate-only"]
# (rows, batch, E, group size): odd rows, one group of 37, 3 groups of 8 (partial vectors), 4 groups of 16
SHAPES = [(1, 1, 37, 37), (7, 3, 24, 8), (33, 1, 64, 16)]


def _inputs(rows, batch, E, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(batch, rows, 2 * E + 5, generator=g, dtype=dtype)
    return dict(y=torch.randn(batch, rows, E, generator=g, dtype=dtype), z=proj[..., 3:3 + E],
                weight=1.0 + 0.5 * torch.randn(E, generator=g, dtype=dtype))


def _entry(impl, mode, group_size):
    def fn(y, z, weight):
        w = None if mode == "gate-only" else weight
        return torch_norm(y, z, w, group_size, 1e-5, mode == "before-gate", impl=impl)
    return fn


@needs_torch_cpp
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"R{s[0]}-B{s[1]}-E{s[2]}-g{s[3]}")
@pytest.mark.parametrize("mode", MODES)
def test_torch_cpp_matches_reference(mode, shape, single_thread):
    rows, batch, E, gs = shape
    kw = _inputs(rows, batch, E, seed=rows)
    if mode == "gate-only":
        kw.pop("weight")
        kw["weight"] = None
    compare(_entry("reference", mode, gs), _entry("cpp", mode, gs), kw, n_outputs=1)


@needs_torch_cpp
def test_torch_cpp_fp64_and_auto(monkeypatch):
    kw = _inputs(7, 3, 24, dtype=torch.float64, seed=4)
    compare(_entry("reference", "after-gate", 8), _entry("cpp", "after-gate", 8), kw, n_outputs=1, rtol=1e-10,
            atol=1e-12)
    monkeypatch.delenv("HYBRIDC_KERNEL", raising=False)
    assert TORCH_OP.choice("cpu")[0] == "cpp" and TORCH_OP.choice("cuda")[0] == "reference"


@needs_jax_cpp
@pytest.mark.parametrize("mode", MODES)
def test_jax_cpp_matches_reference(mode):
    import jax
    import jax.numpy as jnp

    kw = {k: jnp.asarray(v.numpy()) for k, v in _inputs(7, 3, 24, seed=2).items()}
    cot = jnp.asarray(np.random.default_rng(0).standard_normal(kw["y"].shape), jnp.float32)

    def loss(impl):
        def f(y, z, w):
            return jnp.sum(jax_norm(y, z, None if mode == "gate-only" else w, 8, 1e-5,
                                                mode == "before-gate", impl=impl) * cot)
        return f
    args = (kw["y"], kw["z"], kw["weight"])
    wrt = (0, 1) if mode == "gate-only" else (0, 1, 2)
    ref = jax.value_and_grad(loss("reference"), argnums=wrt)(*args)
    got = jax.jit(jax.value_and_grad(loss("cpp"), argnums=wrt))(*args)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-4)
    for g, r in zip(got[1], ref[1]):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
    assert JAX_OP.choice("cpu")[0] == "cpp"
