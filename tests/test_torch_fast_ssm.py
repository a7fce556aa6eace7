"""Fast CPU kernels == their sequential references, in values and gradients.

Covers the chunked SSD (``ssd`` impl "chunk"), the linear recurrence's chunked torch scan and C++ scan
(``linear_recurrence`` impls "chunk" and "cpp") and the fused C++ selective scan (``selective_scan`` impl "cpp"),
with the build fallback of ``auto``. Small chunk sizes
(T = 8, and the selective scan's backward checkpoint interval patched to 8) keep the shape grid cheap while every
length class is hit: 1, 7, T-1, T, T+1, 3T+5.

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels    N: state size    G: groups    H: heads    P: head dim
"""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridc_torch.ops import OPS, _cpp_library, linear_recurrence, selective_scan, ssd
from hybridc_torch.ops.linear_recurrence import chunk as lr_chunk
from hybridc_torch.ops.linear_recurrence import cpp as lr_cpp
from hybridc_torch.ops.linear_recurrence import naive as lr_naive
from hybridc_torch.ops.selective_scan import cpp as ss_cpp
from hybridc_torch.ops.selective_scan import naive as ss_naive
from hybridc_torch.ops.ssd import chunk as ssd_chunk
from hybridc_torch.ops.ssd import naive as ssd_naive

T = 8
LENGTHS = [1, 7, T - 1, T, T + 1, 3 * T + 5]
F32 = torch.float32

needs_cpp = pytest.mark.skipif(not _cpp_library.available(), reason="no C++ toolchain for the fused kernel")


def _close(actual, expected, rtol=1e-4, atol=1e-5):
    """rtol plus an absolute tolerance scaled by the reference's magnitude (sums of many fp32 terms)."""
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale)


def _loss(outputs):
    """A fixed random linear functional of all outputs (so every output element gets a distinct cotangent)."""
    g = torch.Generator().manual_seed(1234)
    return sum((o.double() * torch.randn(o.shape, generator=g, dtype=torch.float64)).sum() for o in outputs)


def _compare(fn_ref, fn_fast, inputs, n_outputs):
    """Run both on fresh leaf copies of `inputs` (a dict, None entries allowed); compare outputs and grads."""
    results = []
    for fn in (fn_ref, fn_fast):
        leaves = {k: (None if v is None else v.detach().clone().requires_grad_(v.is_floating_point()))
                  for k, v in inputs.items()}
        outs = fn(**leaves)
        outs = outs if isinstance(outs, tuple) else (outs,)
        assert len(outs) == n_outputs
        grads = {}
        if all(o.numel() for o in outs):
            wrt = {k: v for k, v in leaves.items() if v is not None and v.requires_grad}
            gs = torch.autograd.grad(_loss(outs), list(wrt.values()), allow_unused=True)
            grads = dict(zip(wrt, gs))
        results.append((outs, grads))
    (ref_outs, ref_grads), (outs, grads) = results
    for o, r in zip(outs, ref_outs):
        assert o.dtype == r.dtype and o.shape == r.shape
        _close(o, r)
    for k, r in ref_grads.items():
        assert grads[k] is not None, k
        _close(grads[k], r)


# ----------------------------------------------------------------------------------------------------- SSD
def _ssd_inputs(batch, length, heads, head_dim, groups, state, *, strong=False, h0=False, dtype=F32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(
        x=r(batch, length, heads, head_dim), dt=r(batch, length, heads) * (1.0 if strong else 0.3),
        A=-(torch.rand(heads, generator=g, dtype=dtype) * (8.0 if strong else 0.5) + (2.0 if strong else 0.01)),
        B=r(batch, length, groups, state), C=r(batch, length, groups, state), D=r(heads),
        z=r(batch, length, heads, head_dim), dt_bias=r(heads) * 0.3,
        initial_states=r(batch, heads, head_dim, state) if h0 else None,
    )


def _ssd_fn(impl, chunk_size=T):
    def fn(**kw):
        return ssd(**kw, chunk_size=chunk_size, dt_softplus=True, return_final_states=True, impl=impl)
    return fn


@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
def test_ssd_chunk_matches_reference(length, batch, h0, strong):
    kw = _ssd_inputs(batch, length, 4, 3, 2, 5, strong=strong, h0=h0, seed=length)
    _compare(_ssd_fn("reference"), _ssd_fn("chunk"), kw, 2)


def test_ssd_chunk_options_and_dtypes():
    kw = _ssd_inputs(2, 13, 4, 3, 1, 5, h0=True)
    kw["D"] = torch.randn(4, 3)  # D per (head, channel)
    kw.pop("z")
    _compare(_ssd_fn("reference"), _ssd_fn("chunk", 4), kw, 2)
    for dtype in (torch.float64, torch.bfloat16):
        kw = _ssd_inputs(1, 9, 2, 2, 1, 3, dtype=dtype)
        y, final = ssd(**kw, chunk_size=4, return_final_states=True, impl="chunk")
        y_ref, final_ref = ssd(**kw, chunk_size=4, return_final_states=True, impl="reference")
        assert y.dtype == dtype and final.dtype == final_ref.dtype
        tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(y, y_ref, **tol)
        torch.testing.assert_close(final, final_ref, **tol)


def test_ssd_chunk_size_honoured_and_auto():
    kw = _ssd_inputs(1, 20, 2, 2, 1, 3, h0=True)
    outs = [ssd(**kw, chunk_size=c, return_final_states=True, impl="chunk") for c in (1, 3, 8, 64)]
    for y, f in outs[1:]:
        _close(y, outs[0][0])
        _close(f, outs[0][1])
    assert OPS["ssd"].pick("auto", "cpu") is ssd_chunk.chunk_ssd
    assert OPS["ssd"].pick("reference", "cpu") is ssd_naive.reference


# --------------------------------------------------------------------------------------- linear recurrence
def _lr_inputs(batch, length, width, *, strong=False, h0=False, dtype=F32, seed=0, resets=False):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, length, width, generator=g, dtype=dtype)
    a = a * 0.3 if strong else 0.9 + 0.1 * a
    if resets:  # exact zeros, as the RG-LRU's document resets produce
        a = a * (torch.rand(batch, length, width, generator=g) > 0.2).to(dtype)
    return dict(a=a, x=torch.randn(batch, length, width, generator=g, dtype=dtype),
                initial_state=torch.randn(batch, width, generator=g, dtype=dtype) if h0 else None)


LR_IMPLS = ["chunk", pytest.param("cpp", marks=needs_cpp)]


def _lr_fn(impl, chunk_size=T):
    def fn(**kw):
        if impl == "chunk":
            return linear_recurrence(**kw, impl=impl, chunk_size=chunk_size)
        return linear_recurrence(**kw, impl=impl)
    return fn


@pytest.mark.parametrize("impl", LR_IMPLS)
@pytest.mark.parametrize("length", LENGTHS + [T * T + 3], ids=lambda n: f"L{n}")
@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
def test_linear_recurrence_fast_matches_reference(impl, length, batch, h0, strong):
    kw = _lr_inputs(batch, length, 5 if impl == "chunk" else 70, strong=strong, h0=h0, seed=length, resets=strong)
    _compare(_lr_fn("reference"), _lr_fn(impl), kw, 2)


@pytest.mark.parametrize("impl", LR_IMPLS)
def test_linear_recurrence_fast_dtypes(impl):
    for dtype in (torch.float64, torch.bfloat16):
        kw = _lr_inputs(2, 19, 3, h0=True, dtype=dtype)
        h, last = _lr_fn(impl, 4)(**kw)
        h_ref, last_ref = linear_recurrence(**kw, impl="reference")
        assert h.dtype == dtype and last.dtype == last_ref.dtype
        tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(h, h_ref, **tol)
        torch.testing.assert_close(last, last_ref, **tol)


@needs_cpp
def test_linear_recurrence_cpp_is_bitwise_the_reference():
    """No FMA contraction in the C++ scan: same roundings as the loop (and the decode step)."""
    kw = _lr_inputs(3, 200, 70, h0=True, resets=True)
    for got, want in zip(linear_recurrence(**kw, impl="cpp"), linear_recurrence(**kw, impl="reference")):
        assert torch.equal(got, want)


def test_linear_recurrence_chunk_sizes_and_auto():
    kw = _lr_inputs(2, 100, 3, h0=True)
    base = linear_recurrence(**kw, impl="reference")
    for c in (1, 2, 5, 100, 1000, None):
        out = linear_recurrence(**kw, impl="chunk", chunk_size=c)
        _close(out[0], base[0])
        _close(out[1], base[1])
    auto = lr_cpp.linear_recurrence_cpp if _cpp_library.available() else lr_chunk.chunk_linear_recurrence
    assert OPS["linear_recurrence"].pick("auto", "cpu") is auto
    assert OPS["linear_recurrence"].pick("reference") is lr_naive.reference


@pytest.mark.parametrize("impl", LR_IMPLS)
def test_linear_recurrence_empty_sequence(impl):
    a, x, h0 = torch.rand(2, 0, 3), torch.rand(2, 0, 3), torch.rand(2, 3)
    h, last = linear_recurrence(a, x, h0, impl=impl)
    assert h.shape == (2, 0, 3)
    torch.testing.assert_close(last, h0)


# ------------------------------------------------------------------------------------------ selective scan
@pytest.fixture
def small_checkpoints(monkeypatch):
    """Backward checkpoints every T steps, so the test lengths cross checkpoint boundaries."""
    monkeypatch.setattr(_cpp_library, "CHECKPOINT_EVERY", T)


def _ss_inputs(batch, channels, state, length, groups=None, *, strong=False, h0=False, full=True, dtype=F32,
               seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    bc = (batch, state, length) if groups is None else (batch, groups, state, length)
    kw = dict(u=r(batch, channels, length), delta=r(batch, channels, length) * (1.0 if strong else 0.5),
              A=-(torch.rand(channels, state, generator=g, dtype=dtype) * (8.0 if strong else 1.0)
                  + (2.0 if strong else 0.05)),
              B=r(*bc), C=r(*bc), D=None, z=None, delta_bias=None,
              initial_state=r(batch, channels, state) if h0 else None)
    if full:
        kw.update(D=r(channels), z=r(batch, channels, length), delta_bias=r(channels) * 0.3)
    return kw


def _ss_fn(impl, softplus=True):
    def fn(**kw):
        return selective_scan(**kw, delta_softplus=softplus, return_last_state=True, impl=impl)
    return fn


@needs_cpp
@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
def test_selective_scan_cpp_matches_reference(small_checkpoints, length, batch, h0, strong):
    kw = _ss_inputs(batch, 6, 4, length, strong=strong, h0=h0, seed=length)
    _compare(_ss_fn("reference"), _ss_fn("cpp"), kw, 2)


@needs_cpp
@pytest.mark.parametrize("groups", [None, 1, 2], ids=["no-groups", "G1", "G2"])
@pytest.mark.parametrize("full", [False, True], ids=["bare", "D-z-bias"])
@pytest.mark.parametrize("softplus", [False, True], ids=["raw-dt", "softplus"])
def test_selective_scan_cpp_options(small_checkpoints, groups, full, softplus):
    kw = _ss_inputs(2, 6, 5, 2 * T + 3, groups, h0=True, full=full, seed=7)
    if not softplus:
        kw["delta"] = kw["delta"].abs()
    _compare(_ss_fn("reference", softplus), _ss_fn("cpp", softplus), kw, 2)


@needs_cpp
def test_selective_scan_cpp_dtypes_threads_and_no_grad(small_checkpoints):
    kw = _ss_inputs(2, 4, 3, 11, h0=True, dtype=torch.float64)
    _compare(_ss_fn("reference"), _ss_fn("cpp"), kw, 2)  # fp64 path (exact exp)
    kw = _ss_inputs(2, 4, 3, 11, h0=True, dtype=torch.bfloat16)
    out, last = _ss_fn("cpp")(**kw)
    ref, ref_last = _ss_fn("reference")(**kw)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(last, ref_last, rtol=1e-3, atol=1e-3)
    kw = _ss_inputs(3, 8, 4, 20, h0=True)
    ref = _ss_fn("reference")(**kw)
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):  # more tasks than threads, and the single-threaded path
            torch.set_num_threads(n)
            with torch.no_grad():
                out = _ss_fn("cpp")(**kw)
            _close(out[0], ref[0])
            _close(out[1], ref[1])
    finally:
        torch.set_num_threads(threads)
    out = selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], impl="cpp")  # out only
    assert out.shape == kw["u"].shape
    empty = _ss_inputs(2, 4, 3, 0, h0=True)
    out, last = _ss_fn("cpp")(**empty)
    assert out.shape == (2, 4, 0)
    torch.testing.assert_close(last, empty["initial_state"])


@needs_cpp
@pytest.mark.parametrize("state", [16, 17], ids=["N16-specialised", "N17-generic"])
def test_selective_scan_cpp_common_state_sizes(small_checkpoints, state):
    kw = _ss_inputs(2, 3, state, 2 * T + 1, h0=True, seed=state)
    _compare(_ss_fn("reference"), _ss_fn("cpp"), kw, 2)


def _lanes():
    return _cpp_library.load().hybridc_ss_lanes(0)


@needs_cpp
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("groups", [None, 2], ids=["no-groups", "G2"])
def test_selective_scan_cpp_channel_blocks(small_checkpoints, threads, groups):
    """The kernel vectorises across channels in blocks of W lanes: several blocks per task, several tasks per group
    and a partial last block (channels per group = 5 W + 3), with N = 16 (the unrolled path)."""
    per_group = 5 * _lanes() + 3
    channels = per_group * (groups or 1)
    kw = _ss_inputs(1, channels, 16, 2 * T + 3, groups, h0=True, seed=11)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        _compare(_ss_fn("reference"), _ss_fn("cpp"), kw, 2)
    finally:
        torch.set_num_threads(old)


@needs_cpp
def test_selective_scan_cpp_extreme_values(small_checkpoints):
    """softplus above its threshold (20) and far below 0, decays exp(dt A) below the fp32 range (exactly 0), and
    gates silu(z) at both ends: the fused elementwise math matches torch's."""
    kw = _ss_inputs(2, 2 * _lanes() + 1, 4, 3 * T + 5, h0=True, seed=3)
    g = torch.Generator().manual_seed(5)
    kw["delta"] = torch.randn(kw["delta"].shape, generator=g) * 30  # softplus on both sides of its threshold
    kw["A"] = kw["A"] * 10  # dt A down to about -1e4
    kw["z"] = torch.randn(kw["z"].shape, generator=g) * 40
    _compare(_ss_fn("reference"), _ss_fn("cpp"), kw, 2)
    out, last = _ss_fn("cpp")(**kw)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()


@needs_cpp
@pytest.mark.skipif(__import__("platform").machine() not in ("x86_64", "AMD64"), reason="x86 build flags")
def test_selective_scan_cpp_portable_build(monkeypatch, small_checkpoints):
    """The vector code without AVX (-march=x86-64: the generic min/max, vectors split into SSE2 halves) and with 16
    fp32 lanes (the AVX-512 lane count, emulated): same results as the reference."""
    lib = _cpp_library._build(("-march=x86-64", "-DHYBRIDC_VBYTES=64"))
    assert lib.hybridc_ss_lanes(0) == 16 and lib.hybridc_ss_lanes(1) == 8
    monkeypatch.setattr(_cpp_library._LOADER, "lib", lib)
    monkeypatch.setattr(_cpp_library._LOADER, "tried", True)
    for state, groups in ((16, None), (5, 2)):
        kw = _ss_inputs(2, 2 * 19, state, 2 * T + 3, groups, h0=True, seed=state)
        _compare(_ss_fn("reference"), _ss_fn("cpp"), kw, 2)


@needs_cpp
def test_selective_scan_auto_picks_cpp():
    assert OPS["selective_scan"].pick("auto", "cpu") is ss_cpp.selective_scan_cpp
    assert OPS["selective_scan"].pick("reference", "cpu") is ss_naive.reference


def test_selective_scan_auto_falls_back_when_build_fails(monkeypatch, tmp_path):
    """A failing compile warns once and `auto` runs the reference; it never crashes."""
    monkeypatch.setattr(_cpp_library._LOADER, "lib", None)
    monkeypatch.setattr(_cpp_library._LOADER, "tried", False)
    monkeypatch.setenv("HYBRIDC_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(_cpp_library, "_SRC", tmp_path / "broken.cpp")
    (tmp_path / "broken.cpp").write_text("this is not C++\n")
    kw = _ss_inputs(1, 3, 2, 5)
    with pytest.warns(RuntimeWarning, match="falls back to the reference"):
        out = selective_scan(**{k: v for k, v in kw.items() if k != "initial_state"})
    _close(out, selective_scan(**{k: v for k, v in kw.items() if k != "initial_state"}, impl="reference"))
    assert OPS["selective_scan"].pick("auto", "cpu") is ss_naive.reference
    assert OPS["linear_recurrence"].pick("auto", "cpu") is lr_chunk.chunk_linear_recurrence  # torch, not the loop
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"])
    with pytest.raises(RuntimeError, match="unavailable"):
        selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], impl="cpp")
    assert not list(tmp_path.glob("*.so"))


def test_selective_scan_disabled_by_env(monkeypatch):
    monkeypatch.setattr(_cpp_library._LOADER, "lib", None)
    monkeypatch.setattr(_cpp_library._LOADER, "tried", False)
    monkeypatch.setenv("HYBRIDC_DISABLE_CPP", "1")
    assert not _cpp_library.available()
    assert OPS["selective_scan"].pick("auto", "cpu") is ss_naive.reference


# ------------------------------------------------------------------------------------------ property tests
@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 2), length=st.integers(1, 30), heads_per_group=st.integers(1, 2),
       groups=st.integers(1, 2), head_dim=st.integers(1, 3), state=st.integers(1, 4), chunk=st.integers(1, 9),
       h0=st.booleans(), seed=st.integers(0, 2**16))
def test_ssd_property(batch, length, heads_per_group, groups, head_dim, state, chunk, h0, seed):
    kw = _ssd_inputs(batch, length, heads_per_group * groups, head_dim, groups, state, h0=h0, seed=seed)
    _compare(_ssd_fn("reference"), _ssd_fn("chunk", chunk), kw, 2)


@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 2), length=st.integers(1, 40), width=st.integers(1, 70), chunk=st.integers(1, 9),
       h0=st.booleans(), strong=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_recurrence_property(batch, length, width, chunk, h0, strong, seed):
    kw = _lr_inputs(batch, length, width, strong=strong, h0=h0, seed=seed, resets=strong)
    _compare(_lr_fn("reference"), _lr_fn("chunk", chunk), kw, 2)
    if _cpp_library.available():
        _compare(_lr_fn("reference"), _lr_fn("cpp"), kw, 2)


@needs_cpp
@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 2), length=st.integers(1, 30), channels_per_group=st.integers(1, 3),
       groups=st.sampled_from([None, 1, 2]), state=st.integers(1, 5), checkpoint=st.integers(1, 9),
       h0=st.booleans(), full=st.booleans(), seed=st.integers(0, 2**16))
def test_selective_scan_property(batch, length, channels_per_group, groups, state, checkpoint, h0, full, seed):
    channels = channels_per_group * (groups or 1)
    kw = _ss_inputs(batch, channels, state, length, groups, h0=h0, full=full, seed=seed)
    old = _cpp_library.CHECKPOINT_EVERY
    _cpp_library.CHECKPOINT_EVERY = checkpoint
    try:
        _compare(_ss_fn("reference"), _ss_fn("cpp"), kw, 2)
    finally:
        _cpp_library.CHECKPOINT_EVERY = old


# ------------------------------------------------------------------------------------------- long sequences
LONG = 16384


@pytest.mark.parametrize("impl", LR_IMPLS)
def test_long_sequence_linear_recurrence_finite(impl):
    kw = _lr_inputs(1, LONG, 2, h0=True)
    kw["a"] = torch.full_like(kw["a"], 0.999)
    h, last = linear_recurrence(**kw, impl=impl)
    h_ref, last_ref = linear_recurrence(**kw, impl="reference")
    assert torch.isfinite(h).all() and torch.isfinite(last).all()
    _close(h, h_ref)
    _close(last, last_ref)


def test_long_sequence_ssd_finite():
    kw = _ssd_inputs(1, LONG, 2, 2, 1, 2, h0=True)
    kw.pop("z")
    y, final = ssd(**kw, chunk_size=64, return_final_states=True, impl="chunk")
    assert torch.isfinite(y).all() and torch.isfinite(final).all()
    y_ref, final_ref = ssd(**kw, chunk_size=64, return_final_states=True, impl="reference")
    _close(y, y_ref)
    _close(final, final_ref)


@needs_cpp
def test_long_sequence_selective_scan_finite():
    kw = _ss_inputs(1, 2, 2, LONG, h0=True)
    leaves = {k: (v.requires_grad_() if v is not None else None) for k, v in kw.items()}
    out, last = _ss_fn("cpp")(**leaves)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    out.sum().backward()
    assert all(torch.isfinite(v.grad).all() for v in leaves.values() if v is not None)
    with torch.no_grad():
        ref, ref_last = _ss_fn("reference")(**kw)
    _close(out.detach(), ref)
    _close(last.detach(), ref_last)
