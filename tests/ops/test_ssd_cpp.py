"""ssd's fused C++ CPU kernel (``impl="cpp"``) in both backends against the sequential reference.

torch (``hybridc_torch.ops.ssd.cpp``, an autograd Function over the kernel): outputs, final state and the gradient of
every input (x, dt, A, B, C, D, dt_bias, initial state) over odd lengths (1, 7, 33, 100: none a multiple of the
checkpoint interval K = 8 the tests set), groups 1 and 2, with and without an initial state; the kernel's lane
blocks (1, 2 and 4 vectors per block, partial blocks, several tasks per head, odd state sizes); each option (D per
head or per channel, z, no bias, raw dt); fp64, bf16, no_grad, an empty sequence; extreme dt and decays; a portable
build; 2048 steps. JAX (``hybridc_jax.ops.ssd.cpp``, the same kernel as an XLA custom call with a custom VJP): values
and ``jax.grad`` against the lax.scan reference, against torch's kernel and under vmap.

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups    N: state size    K: checkpoint interval
"""

import platform

import pytest
import torch

from hybridc_jax import ops as jax_ops
from hybridc_jax.ops.ssd import cpp as jssd_cpp
from hybridc_torch.ops import OPS, _cpp_library, ssd
from hybridc_torch.ops.ssd import cpp as ssd_cpp
from ops._inputs import fast_inputs
from ops._jax_checks import CASES, case_id, compare_fast, cpp_matches_torch_and_runs_under_vmap, needs_jax_cpp
from ops._torch_checks import close_scaled, compare, needs_torch_cpp

K = 8  # the checkpoint interval in these tests: every length below crosses (or stops short of) a boundary
F32, F64 = torch.float32, torch.float64


@pytest.fixture
def small_checkpoints(monkeypatch):
    monkeypatch.setattr(ssd_cpp, "CHECKPOINT_EVERY", K)
    monkeypatch.setattr(jssd_cpp, "CHECKPOINT_EVERY", K)


def _inputs(batch, length, heads, head_dim, groups, state, *, h0=False, strong=False, dtype=F32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(
        x=r(batch, length, heads, head_dim), dt=r(batch, length, heads) * (1.0 if strong else 0.5),
        A=-(torch.rand(heads, generator=g, dtype=dtype) * (6.0 if strong else 1.0) + (1.0 if strong else 0.05)),
        B=r(batch, length, groups, state), C=r(batch, length, groups, state), D=r(heads), dt_bias=r(heads) * 0.3,
        initial_states=r(batch, heads, head_dim, state) if h0 else None,
    )


def _entry(impl, softplus=True):
    def fn(**kw):
        return ssd(**kw, chunk_size=16, dt_softplus=softplus, return_final_states=True, impl=impl)
    return fn


def _lanes():
    return _cpp_library.load().hybridc_ssd_block(0, 1)  # lanes per vector (a block of one vector at P = 1)


# ======================================================================================= torch: values and grads
@needs_torch_cpp
@pytest.mark.parametrize("h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("groups", [1, 2], ids=lambda g: f"G{g}")
@pytest.mark.parametrize("length", [1, 7, 33, 100], ids=lambda n: f"L{n}")
def test_torch_cpp_matches_reference(small_checkpoints, length, groups, h0):
    kw = _inputs(2, length, 4, 5, groups, 6, h0=h0, strong=length % 2 == 1, seed=length + groups)
    compare(_entry("reference"), _entry("cpp"), kw, 2)


@needs_torch_cpp
@pytest.mark.parametrize("threads", [1, 2], ids=lambda n: f"threads{n}")
@pytest.mark.parametrize("vectors", [1, 2, 4], ids=lambda v: f"R{v}")
def test_torch_cpp_lane_blocks(small_checkpoints, vectors, threads):
    """Blocks of 1, 2 and 4 vectors across the head dim (the kernel picks by P), each with a partial last block;
    with 4, P spans three blocks, so a head is split into several tasks; state 7 exercises the odd-row tail."""
    W = _lanes()
    head_dim = {1: W - 3, 2: 2 * W - 1, 4: 8 * W + 3}[vectors]
    kw = _inputs(1, 2 * K + 3, 2, head_dim, 1, 7, h0=True, seed=vectors)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        compare(_entry("reference"), _entry("cpp"), kw, 2)
    finally:
        torch.set_num_threads(old)


@needs_torch_cpp
@pytest.mark.parametrize("option", ["D-per-channel", "z", "no-D-no-bias", "raw-dt"])
def test_torch_cpp_options(small_checkpoints, option):
    kw = _inputs(2, 2 * K + 3, 4, 3, 2, 5, h0=True, seed=7)
    g = torch.Generator().manual_seed(8)
    softplus = option != "raw-dt"
    if option == "D-per-channel":
        kw["D"] = torch.randn(4, 3, generator=g)
    elif option == "z":
        kw["z"] = torch.randn(kw["x"].shape, generator=g)
    elif option == "no-D-no-bias":
        kw.update(D=None, dt_bias=None)
    else:
        kw["dt"] = kw["dt"].abs() + 0.01
    compare(_entry("reference", softplus), _entry("cpp", softplus), kw, 2)


@needs_torch_cpp
@pytest.mark.parametrize("groups", [1, 2], ids=lambda g: f"G{g}")
def test_torch_cpp_strided_views(small_checkpoints, groups):
    """x, B, C as the layer passes them (channel-major views of one conv output, read in place by the kernel) and dt
    as a slice of a wider projection: values and the gradients through the views equal the reference's."""
    batch, length, heads, head_dim, state = 2, 2 * K + 5, 4, 5, 3
    E, GN = heads * head_dim, groups * state
    g = torch.Generator().manual_seed(12)
    xBC = torch.randn(batch, E + 2 * GN, length, generator=g)  # (B, X, L)
    zdt = torch.randn(batch, length, 7 + heads, generator=g)  # dt is its last H columns
    rest = _inputs(batch, length, heads, head_dim, groups, state, h0=True, seed=13)

    def run(impl):
        leaves = [xBC.clone().requires_grad_(), zdt.clone().requires_grad_()]
        x, Bm, Cm = leaves[0].transpose(1, 2).split([E, GN, GN], dim=-1)  # (B, L, X) views, channel stride L
        kw = dict(rest, x=x.unflatten(-1, (heads, head_dim)), B=Bm.unflatten(-1, (groups, state)),
                  C=Cm.unflatten(-1, (groups, state)), dt=leaves[1][..., 7:])
        y, final = _entry(impl)(**kw)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        return y, final, torch.autograd.grad((y * w).sum() + final.sum(), leaves)

    y, final, grads = run("cpp")
    y_r, final_r, grads_r = run("reference")
    close_scaled(y, y_r)
    close_scaled(final, final_r)
    for a, b in zip(grads, grads_r):
        close_scaled(a, b, 1e-4, 1e-4)


@needs_torch_cpp
def test_torch_cpp_dtypes_no_grad_and_empty(small_checkpoints):
    kw = _inputs(2, 11, 2, 3, 1, 4, h0=True, dtype=F64)
    compare(_entry("reference"), _entry("cpp"), kw, 2, rtol=1e-10, atol=1e-10)  # fp64: exact exp and softplus
    kw = _inputs(2, 11, 2, 3, 1, 4, h0=True, dtype=torch.bfloat16)
    y, final = _entry("cpp")(**kw)
    y_ref, final_ref = _entry("reference")(**kw)
    assert y.dtype == torch.bfloat16 and final.dtype == F32
    torch.testing.assert_close(y, y_ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(final, final_ref, rtol=1e-3, atol=1e-3)
    kw = _inputs(2, 20, 2, 3, 1, 4, h0=True)
    with torch.no_grad():  # no checkpoints stored
        y, final = _entry("cpp")(**kw)
    y_ref, final_ref = _entry("reference")(**kw)
    close_scaled(y, y_ref)
    close_scaled(final, final_ref)
    assert ssd(**kw, chunk_size=4, impl="cpp").shape == kw["x"].shape  # y only
    empty = _inputs(2, 0, 2, 3, 1, 4, h0=True)
    y, final = _entry("cpp")(**empty)
    assert y.shape == (2, 0, 2, 3)
    torch.testing.assert_close(final, empty["initial_states"])


@needs_torch_cpp
def test_torch_cpp_extreme_values(small_checkpoints):
    """softplus on both sides of its threshold (20), decays exp(dt A) below the fp32 range (exactly 0)."""
    kw = _inputs(2, 3 * K + 5, 2, 5, 1, 4, h0=True, seed=3)
    g = torch.Generator().manual_seed(5)
    kw["dt"] = torch.randn(kw["dt"].shape, generator=g) * 30
    kw["A"] = kw["A"] * 10
    compare(_entry("reference"), _entry("cpp"), kw, 2)
    y, final = _entry("cpp")(**kw)
    assert torch.isfinite(y).all() and torch.isfinite(final).all()


@needs_torch_cpp
def test_torch_cpp_long_sequence():
    """2048 steps at the default checkpoint interval (values; the state is carried across 32 checkpoints)."""
    kw = _inputs(1, 2048, 2, 4, 1, 8, h0=True, seed=9)
    with torch.no_grad():
        y, final = _entry("cpp")(**kw)
        y_ref, final_ref = _entry("reference")(**kw)
    assert torch.isfinite(y).all()
    close_scaled(y, y_ref)
    close_scaled(final, final_ref)


@needs_torch_cpp
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 build flags")
def test_torch_cpp_portable_build(monkeypatch, small_checkpoints):
    """The vector code without AVX (-march=x86-64) and with 16 fp32 lanes (the selective scan test's build, cached)."""
    lib = _cpp_library._build(("-march=x86-64", "-DHYBRIDC_VBYTES=64"))
    monkeypatch.setattr(_cpp_library._LOADER, "lib", lib)
    monkeypatch.setattr(_cpp_library._LOADER, "tried", True)
    assert lib.hybridc_ssd_block(0, 1) == 16 and lib.hybridc_ssd_block(0, 40) == 64
    kw = _inputs(2, 2 * K + 3, 2, 19, 2, 5, h0=True, seed=4)
    compare(_entry("reference"), _entry("cpp"), kw, 2)


@needs_torch_cpp
def test_torch_auto_picks_cpp_and_falls_back(monkeypatch):
    monkeypatch.delenv("HYBRIDC_KERNEL", raising=False)
    assert OPS["ssd"].pick("auto", "cpu") is ssd_cpp.ssd_cpp
    monkeypatch.setattr(_cpp_library._LOADER, "lib", None)
    monkeypatch.setattr(_cpp_library._LOADER, "tried", True)
    assert OPS["ssd"].pick("auto", "cpu") is OPS["ssd"].get("chunk")
    with pytest.raises(RuntimeError, match="unavailable"):
        ssd_cpp.ssd_cpp(**_inputs(1, 3, 1, 2, 1, 2), chunk_size=4)


# ============================================================================================ JAX: the custom call
@needs_jax_cpp
@pytest.mark.parametrize("length,batch,h0,strong", CASES, ids=[case_id(c) for c in CASES])
def test_jax_cpp_matches_reference(small_checkpoints, length, batch, h0, strong):
    """Values and jax.grad of every input (fast_inputs: H4 P3 G2 N5, with D, z and dt_bias)."""
    compare_fast("ssd", fast_inputs("ssd", batch, length, h0=h0, strong=strong, seed=length), impl="cpp")


@needs_jax_cpp
def test_jax_cpp_matches_torch_and_vmap():
    cpp_matches_torch_and_runs_under_vmap("ssd", fast_inputs("ssd", 2, 21, h0=True, strong=False, seed=2))


@needs_jax_cpp
def test_jax_auto_picks_cpp():
    assert jax_ops.OPS["ssd"].pick("auto", "cpu") is jssd_cpp.ssd_cpp
