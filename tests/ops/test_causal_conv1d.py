"""causal_conv1d's fused C++ CPU kernel (``impl="cpp"``: conv + bias + silu, time-major, x read through strides) in
both backends against the reference: outputs, the new conv state and the gradient of every input (x, weight, bias,
initial state) over lengths 1, 7, 33 (shorter than, and past, the width and one 64-step task), batch 1 and 3,
37 channels (not a multiple of the vector width), widths 1, 2, 4, with and without silu, bias and state; x as a slice
of a wider projection (the Mamba-2 layer's view); fp64; 2 threads; the portable build. JAX: values and jax.grad.

Glossary of dimension letters:
    B: batch    L: sequence length    C: channels    K: conv width
"""
import platform

import numpy as np
import pytest
import torch

from hybridc_jax.ops.causal_conv1d import OP as JAX_OP
from hybridc_jax.ops.causal_conv1d import causal_conv1d as jax_conv
from hybridc_torch.ops import _cpp_library
from hybridc_torch.ops.causal_conv1d import OP as TORCH_OP
from hybridc_torch.ops.causal_conv1d import causal_conv1d as torch_conv
from ops._jax_checks import needs_jax_cpp
from ops._torch_checks import compare, needs_torch_cpp

C = 37

# (length, batch, width, state, silu, bias): each factor value appears at each length
CASES = [(1, 1, 4, True, True, True), (1, 3, 2, False, False, True), (7, 3, 4, True, True, False),
         (7, 1, 1, False, True, True), (33, 3, 4, False, True, True), (33, 1, 2, True, False, False),
         (70, 3, 4, True, True, True)]


def case_id(c):
    L, b, K, st, silu, bias = c
    return f"L{L}-B{b}-K{K}" + ("-h0" if st else "") + ("-silu" if silu else "") + ("-bias" if bias else "")


def _inputs(length, batch, K, state, bias, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    proj = r(batch, length, C + 11)
    return dict(x=proj[..., 5:5 + C], weight=r(C, K), bias=r(C) if bias else None,
                conv_state=r(batch, C, K - 1) if state else None)


def _entry(impl, silu):
    def fn(**kw):
        return torch_conv(**kw, activation="silu" if silu else None, impl=impl)
    return fn


@needs_torch_cpp
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_torch_cpp_matches_reference(case, single_thread):
    length, batch, K, state, silu, bias = case
    compare(_entry("reference", silu), _entry("cpp", silu), _inputs(length, batch, K, state, bias, seed=length + K))


@needs_torch_cpp
def test_torch_cpp_fp64_and_threads():
    kw = _inputs(33, 3, 4, True, True, dtype=torch.float64, seed=3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        compare(_entry("reference", True), _entry("cpp", True), kw, rtol=1e-10, atol=1e-12)
    finally:
        torch.set_num_threads(old)


@needs_torch_cpp
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 build flags")
def test_torch_cpp_portable_build(monkeypatch):
    """The vector code without AVX (-march=x86-64) and with 16 fp32 lanes (the build other op tests use, cached)."""
    lib = _cpp_library._build(("-march=x86-64", "-DHYBRIDC_VBYTES=64"))
    monkeypatch.setattr(_cpp_library._LOADER, "lib", lib)
    monkeypatch.setattr(_cpp_library._LOADER, "tried", True)
    compare(_entry("reference", True), _entry("cpp", True), _inputs(9, 2, 4, True, True, seed=9))


@needs_torch_cpp
def test_torch_auto_and_wide_kernels(monkeypatch):
    monkeypatch.delenv("HYBRIDC_KERNEL", raising=False)
    assert TORCH_OP.choice("cpu")[0] == "cpp" and TORCH_OP.choice("cuda")[0] == "reference"
    kw = _inputs(7, 1, 9, True, True, seed=5)  # past the kernel's widest conv: the reference runs
    compare(_entry("reference", True), _entry("cpp", True), kw)


# ============================================================================================ JAX: the custom call
def _jax_loss(impl, silu, cot):
    import jax.numpy as jnp

    def loss(x, w, b, h0):
        y, state = jax_conv(x, w, b, h0, "silu" if silu else None, impl=impl)
        return jnp.sum(y * cot[0]) + jnp.sum(state * cot[1])
    return loss


@needs_jax_cpp
@pytest.mark.parametrize("case", CASES[:5:2], ids=case_id)
def test_jax_cpp_matches_reference(case):
    import jax
    import jax.numpy as jnp

    length, batch, K, state, silu, bias = case
    kw = {k: None if v is None else jnp.asarray(v.numpy()) for k, v in _inputs(length, batch, K, True, True).items()}
    args = (kw["x"], kw["weight"], kw["bias"] if bias else None, kw["conv_state"] if state else None)
    rng = np.random.default_rng(length)
    cot = (jnp.asarray(rng.standard_normal(kw["x"].shape), jnp.float32),
           jnp.asarray(rng.standard_normal((batch, C, K - 1)), jnp.float32))
    wrt = tuple(i for i, a in enumerate(args) if a is not None)
    ref = jax.value_and_grad(_jax_loss("reference", silu, cot), argnums=wrt)(*args)
    got = jax.jit(jax.value_and_grad(_jax_loss("cpp", silu, cot), argnums=wrt))(*args)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-4)
    for g, r in zip(got[1], ref[1]):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


@needs_jax_cpp
def test_jax_auto_picks_cpp(monkeypatch):
    monkeypatch.delenv("HYBRIDC_KERNEL", raising=False)
    assert JAX_OP.choice("cpu")[0] == "cpp" and JAX_OP.choice("gpu")[0] == "reference"
