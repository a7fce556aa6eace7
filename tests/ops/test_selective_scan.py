"""selective_scan (Mamba-1): every implementation of both backends against the sequential reference (``naive``).

torch: the reference against a closed form (float64) and transformers' ``mamba_selective_scan``; the fused C++ scan
(``cpp``) and the Triton kernels (``triton``, through Triton's interpreter on CPU: conftest.py sets
TRITON_INTERPRET=1; ``TRITON_INTERPRET=0`` on a GPU machine runs them on CUDA tensors) against the reference in
values and the gradients of every input. JAX: the reference against torch's on the same numbers; the chunked form
(``chunk``), the C++ kernel as an XLA custom call (``cpp``) and the Pallas kernels (``pallas``, interpreted on CPU)
against the JAX reference, values and ``jax.grad``. Lengths walk every class of the chunked and checkpointed walks
(1, T-1, T, T+1, 2T+3, 3T+5 with T = 8: small chunks and checkpoint intervals keep the grid cheap).

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels    N: state size    G: groups of B/C
"""

import importlib
import os
import platform
import subprocess
import sys
import textwrap
import warnings
from types import SimpleNamespace as NS

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridc_jax import ops as jax_ops
from hybridc_jax.ops.selective_scan import chunk as jss_chunk
from hybridc_jax.ops.selective_scan import cpp as jss_cpp
from hybridc_jax.ops.selective_scan import naive as jss_naive
from hybridc_torch.ops import OPS, _cpp_library, linear_recurrence, selective_scan, selective_scan_step, ssd
from hybridc_torch.ops.linear_recurrence import chunk as lr_chunk
from hybridc_torch.ops.selective_scan import cpp as ss_cpp
from hybridc_torch.ops.selective_scan import naive as ss_naive
from ops._inputs import (PALLAS_BLOCK, PALLAS_CHUNK, PALLAS_LR_CASES, PALLAS_N, PARITY_BATCH, fast_inputs,
                         oracle_ssd_inputs, pallas_lr_inputs, parity_ssd_inputs, rand, torch_and_jax)
from ops._jax_checks import (CASES, JAX_CPP, auto_and_reference_picks, case_id, chunk_matches_torch_fast, close_fast,
                             close_pallas, close_parity, compare_fast, cpp_matches_torch_and_runs_under_vmap, jax_fn,
                             long_sequence_stays_finite, needs_jax_cpp, needs_pallas, pallas_module)
from ops._torch_checks import (TRITON_DEVICE, close_scaled, compare, decay_matrix, needs_torch_cpp, needs_triton,
                               run_and_grad, triton_module)

# the op packages (entry point, step, reference); `from hybridc_jax.ops import ssd` gives the entry callable itself
jss, jssd, jlr = (importlib.import_module(f"hybridc_jax.ops.{op}") for op in ("selective_scan", "ssd",
                                                                              "linear_recurrence"))
tss = importlib.import_module("hybridc_torch.ops.selective_scan")
tss_triton = triton_module("selective_scan")
pss, plr = pallas_module("selective_scan"), pallas_module("linear_recurrence")

T = 8  # chunk, checkpoint interval and Triton chunk in these tests
F32, F64 = torch.float32, torch.float64


# ============================================================================ torch: the reference's oracles
ORACLE_LENGTHS = [1, 7, 33]


def _oracle_inputs(batch, channels, state, length, groups=None, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    bc_shape = (batch, state, length) if groups is None else (batch, groups, state, length)
    return dict(
        u=r(batch, channels, length), delta=r(batch, channels, length) * 0.5,
        A=-torch.rand(channels, state, generator=g, dtype=dtype) * 2 - 0.1,
        B=r(*bc_shape), C=r(*bc_shape), D=r(channels), z=r(batch, channels, length),
        delta_bias=r(channels) * 0.3,
    )


def _closed_form(u, delta, A, B, C, D, z, delta_bias, h0):
    """Quadratic form: h_t = exp(S_t) h0 + sum_{s<=t} exp(S_t - S_s) dt_s B_s u_s with S_t = cumsum(dt) A."""
    dt = F.softplus(delta + delta_bias[:, None])  # (B, D, L)
    log_a = dt[..., None] * A[:, None, :]  # (B, D, L, N)
    M = decay_matrix(log_a.movedim(2, -1))  # (B, D, N, L, L)
    dBu = (dt * u)[:, :, None, :] * B[:, None, :, :]  # (B, D, N, L)
    h = torch.einsum("bdnts,bdns->bdnt", M, dBu)  # (B, D, N, L)
    h = h + torch.exp(torch.cumsum(log_a, dim=2)).movedim(2, -1) * h0[..., None]
    y = torch.einsum("bdnt,bnt->bdt", h, C) + D[:, None] * u  # (B, D, L)
    return y * F.silu(z), h[..., -1]


@pytest.mark.parametrize("length", ORACLE_LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero-h0", "h0"])
def test_torch_reference_matches_closed_form(length, with_h0):
    kw = _oracle_inputs(2, 5, 3, length)
    h0 = torch.randn(2, 5, 3, dtype=F64) if with_h0 else torch.zeros(2, 5, 3, dtype=F64)
    out, last = selective_scan(**kw, delta_softplus=True, return_last_state=True,
                               initial_state=h0 if with_h0 else None)
    ref_out, ref_last = _closed_form(**kw, h0=h0)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, ref_last, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("length", ORACLE_LENGTHS, ids=lambda n: f"L{n}")
def test_torch_reference_matches_transformers(length):
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan

    kw = _oracle_inputs(2, 6, 4, length, dtype=torch.float32, seed=1)
    out, last = selective_scan(**kw, delta_softplus=True, return_last_state=True)
    hf_out, hf_last = mamba_selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], D=kw["D"], z=kw["z"],
                                           delta_bias=kw["delta_bias"], delta_softplus=True,
                                           return_last_state=True)
    torch.testing.assert_close(out, hf_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, hf_last, rtol=1e-5, atol=1e-5)
    assert out.dtype == torch.float32 and last.dtype == torch.float32


@pytest.mark.parametrize("length", [1, 7], ids=lambda n: f"L{n}")
def test_torch_reference_groups_equal_per_group_calls(length):
    kw = _oracle_inputs(2, 6, 3, length, groups=3, seed=2)
    out = selective_scan(**kw, delta_softplus=True)  # (B, D, L)
    for g in range(3):
        sl = slice(2 * g, 2 * g + 2)
        part = selective_scan(kw["u"][:, sl], kw["delta"][:, sl], kw["A"][sl], kw["B"][:, g], kw["C"][:, g],
                              D=kw["D"][sl], z=kw["z"][:, sl], delta_bias=kw["delta_bias"][sl], delta_softplus=True)
        torch.testing.assert_close(out[:, sl], part, rtol=1e-12, atol=1e-12)


def test_torch_step_equals_reference_one_step():
    kw = _oracle_inputs(3, 4, 5, 1, seed=3)
    h0 = torch.randn(3, 4, 5, dtype=F64)
    out, last = selective_scan(**kw, delta_softplus=True, return_last_state=True, initial_state=h0)
    h0_copy = h0.clone()
    y_t, new = selective_scan_step(h0, kw["u"][..., 0], kw["delta"][..., 0], kw["A"], kw["B"][..., 0],
                                   kw["C"][..., 0], kw["D"], kw["z"][..., 0], kw["delta_bias"], True)
    torch.testing.assert_close(y_t, out[..., 0], rtol=0, atol=1e-14)
    torch.testing.assert_close(new, last, rtol=0, atol=1e-14)
    assert torch.equal(h0, h0_copy)


def test_torch_reference_optional_args_and_default_return():
    kw = _oracle_inputs(1, 3, 2, 7, seed=4)
    out = selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"])
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 7)
    # Without softplus/bias/D/z: direct recurrence h = exp(delta A) h + delta B u, y = C.h
    h = torch.zeros(1, 3, 2, dtype=F64)
    for t in range(7):
        d = kw["delta"][..., t, None]
        h = torch.exp(d * kw["A"]) * h + d * kw["B"][:, None, :, t] * kw["u"][..., t, None]
        torch.testing.assert_close(out[..., t], (h * kw["C"][:, None, :, t]).sum(-1), rtol=1e-12, atol=1e-12)


def test_torch_impl_registry_and_unknown_impl():
    op = OPS["selective_scan"]
    assert "reference" in op.impls and len(op.impls) >= 2  # the reference plus a fast CPU kernel
    assert op.pick("reference") is ss_naive.reference
    assert op.pick("auto", device="cuda") is op.get("triton")  # the Triton kernels (triton is installed)
    with pytest.raises(ValueError, match="auto.*reference"):
        op.pick("triton-nope")


def test_torch_entry_points_reject_unknown_impl():
    """All three SSM entry points (selective_scan, ssd, linear_recurrence) in one test, kept here."""
    kw = _oracle_inputs(1, 2, 2, 3)
    with pytest.raises(ValueError, match="reference"):
        selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], impl="fast")
    s = oracle_ssd_inputs(1, 3, 2, 2, 1, 2)
    with pytest.raises(ValueError, match="reference"):
        ssd(s["x"], s["dt"], s["A"], s["B"], s["C"], 4, impl="fast")
    with pytest.raises(ValueError, match="reference"):
        linear_recurrence(torch.rand(1, 3, 2), torch.rand(1, 3, 2), impl="fast")


# ====================================================================== torch: cpp and triton vs the reference
LENGTHS = [1, T - 1, T, T + 1, 2 * T + 3, 3 * T + 5]


def _inputs(batch, channels, state, length, groups=None, *, strong=False, h0=False, full=True, dtype=F32, seed=0,
            device="cpu"):
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
    return {k: (None if v is None else v.to(device)) for k, v in kw.items()}


def _entry(impl, softplus=True):
    def fn(**kw):
        return selective_scan(**kw, delta_softplus=softplus, return_last_state=True, impl=impl)
    return fn


@pytest.fixture
def small_checkpoints(monkeypatch):
    """Backward checkpoints every T steps, so the test lengths cross checkpoint boundaries."""
    monkeypatch.setattr(_cpp_library, "CHECKPOINT_EVERY", T)


@needs_torch_cpp
@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
@pytest.mark.parametrize("h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
def test_torch_cpp_matches_reference(small_checkpoints, length, batch, h0, strong):
    kw = _inputs(batch, 6, 4, length, strong=strong, h0=h0, seed=length)
    compare(_entry("reference"), _entry("cpp"), kw, 2)


@needs_torch_cpp
@pytest.mark.parametrize("softplus", [False, True], ids=["raw-dt", "softplus"])
@pytest.mark.parametrize("full", [False, True], ids=["bare", "D-z-bias"])
@pytest.mark.parametrize("groups", [None, 1, 2], ids=["no-groups", "G1", "G2"])
def test_torch_cpp_options(small_checkpoints, groups, full, softplus):
    kw = _inputs(2, 6, 5, 2 * T + 3, groups, h0=True, full=full, seed=7)
    if not softplus:
        kw["delta"] = kw["delta"].abs()
    compare(_entry("reference", softplus), _entry("cpp", softplus), kw, 2)


@needs_torch_cpp
def test_torch_cpp_dtypes_threads_and_no_grad(small_checkpoints):
    kw = _inputs(2, 4, 3, 11, h0=True, dtype=torch.float64)
    compare(_entry("reference"), _entry("cpp"), kw, 2)  # fp64 path (exact exp)
    kw = _inputs(2, 4, 3, 11, h0=True, dtype=torch.bfloat16)
    out, last = _entry("cpp")(**kw)
    ref, ref_last = _entry("reference")(**kw)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(last, ref_last, rtol=1e-3, atol=1e-3)
    kw = _inputs(3, 8, 4, 20, h0=True)
    ref = _entry("reference")(**kw)
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):  # more tasks than threads, and the single-threaded path
            torch.set_num_threads(n)
            with torch.no_grad():
                out = _entry("cpp")(**kw)
            close_scaled(out[0], ref[0])
            close_scaled(out[1], ref[1])
    finally:
        torch.set_num_threads(threads)
    out = selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], impl="cpp")  # out only
    assert out.shape == kw["u"].shape
    empty = _inputs(2, 4, 3, 0, h0=True)
    out, last = _entry("cpp")(**empty)
    assert out.shape == (2, 4, 0)
    torch.testing.assert_close(last, empty["initial_state"])


@needs_torch_cpp
@pytest.mark.parametrize("state", [16, 17], ids=["N16-specialised", "N17-generic"])
def test_torch_cpp_common_state_sizes(small_checkpoints, state):
    kw = _inputs(2, 3, state, 2 * T + 1, h0=True, seed=state)
    compare(_entry("reference"), _entry("cpp"), kw, 2)


def _lanes():
    return _cpp_library.load().hybridc_ss_lanes(0)


@needs_torch_cpp
@pytest.mark.parametrize("groups", [None, 2], ids=["no-groups", "G2"])
@pytest.mark.parametrize("threads", [1, 2], ids=lambda n: f"threads{n}")
def test_torch_cpp_channel_blocks(small_checkpoints, threads, groups):
    """The kernel vectorises across channels in blocks of W lanes: several blocks per task, several tasks per group
    and a partial last block (channels per group = 5 W + 3), with N = 16 (the unrolled path)."""
    per_group = 5 * _lanes() + 3
    channels = per_group * (groups or 1)
    kw = _inputs(1, channels, 16, 2 * T + 3, groups, h0=True, seed=11)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        compare(_entry("reference"), _entry("cpp"), kw, 2)
    finally:
        torch.set_num_threads(old)


@needs_torch_cpp
def test_torch_cpp_extreme_values(small_checkpoints):
    """softplus above its threshold (20) and far below 0, decays exp(dt A) below the fp32 range (exactly 0), and
    gates silu(z) at both ends: the fused elementwise math matches torch's."""
    kw = _inputs(2, 2 * _lanes() + 1, 4, 3 * T + 5, h0=True, seed=3)
    g = torch.Generator().manual_seed(5)
    kw["delta"] = torch.randn(kw["delta"].shape, generator=g) * 30  # softplus on both sides of its threshold
    kw["A"] = kw["A"] * 10  # dt A down to about -1e4
    kw["z"] = torch.randn(kw["z"].shape, generator=g) * 40
    compare(_entry("reference"), _entry("cpp"), kw, 2)
    out, last = _entry("cpp")(**kw)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()


@needs_torch_cpp
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 build flags")
def test_torch_cpp_portable_build(monkeypatch, small_checkpoints):
    """The vector code without AVX (-march=x86-64: the generic min/max, vectors split into SSE2 halves) and with 16
    fp32 lanes (the AVX-512 lane count, emulated): same results as the reference."""
    lib = _cpp_library._build(("-march=x86-64", "-DHYBRIDC_VBYTES=64"))
    assert lib.hybridc_ss_lanes(0) == 16 and lib.hybridc_ss_lanes(1) == 8
    monkeypatch.setattr(_cpp_library._LOADER, "lib", lib)
    monkeypatch.setattr(_cpp_library._LOADER, "tried", True)
    for state, groups in ((16, None), (5, 2)):
        kw = _inputs(2, 2 * 19, state, 2 * T + 3, groups, h0=True, seed=state)
        compare(_entry("reference"), _entry("cpp"), kw, 2)


@needs_torch_cpp
def test_torch_auto_picks_cpp():
    assert OPS["selective_scan"].pick("auto", "cpu") is ss_cpp.selective_scan_cpp
    assert OPS["selective_scan"].pick("reference", "cpu") is ss_naive.reference


def test_torch_auto_falls_back_when_build_fails(monkeypatch, tmp_path):
    """A failing compile warns once and `auto` runs the reference; it never crashes. (The linear recurrence's
    fallback, the chunked torch scan, is checked here too: one failed build covers both.)"""
    monkeypatch.setattr(_cpp_library._LOADER, "lib", None)
    monkeypatch.setattr(_cpp_library._LOADER, "tried", False)
    monkeypatch.setenv("HYBRIDC_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(_cpp_library, "_SRC", tmp_path / "broken.cpp")
    (tmp_path / "broken.cpp").write_text("this is not C++\n")
    kw = _inputs(1, 3, 2, 5)
    with pytest.warns(RuntimeWarning, match="falls back to the reference"):
        out = selective_scan(**{k: v for k, v in kw.items() if k != "initial_state"})
    close_scaled(out, selective_scan(**{k: v for k, v in kw.items() if k != "initial_state"}, impl="reference"))
    assert OPS["selective_scan"].pick("auto", "cpu") is ss_naive.reference
    assert OPS["linear_recurrence"].pick("auto", "cpu") is lr_chunk.chunk_linear_recurrence  # torch, not the loop
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"])
    with pytest.raises(RuntimeError, match="unavailable"):
        selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], impl="cpp")
    assert not list(tmp_path.glob("*.so"))


def test_torch_cpp_disabled_by_env(monkeypatch):
    monkeypatch.setattr(_cpp_library._LOADER, "lib", None)
    monkeypatch.setattr(_cpp_library._LOADER, "tried", False)
    monkeypatch.setenv("HYBRIDC_DISABLE_CPP", "1")
    assert not _cpp_library.available()
    assert OPS["selective_scan"].pick("auto", "cpu") is ss_naive.reference


@needs_torch_cpp
@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 2), length=st.integers(1, 30), channels_per_group=st.integers(1, 3),
       groups=st.sampled_from([None, 1, 2]), state=st.integers(1, 5), checkpoint=st.integers(1, 9),
       h0=st.booleans(), full=st.booleans(), seed=st.integers(0, 2**16))
def test_torch_cpp_property(batch, length, channels_per_group, groups, state, checkpoint, h0, full, seed):
    channels = channels_per_group * (groups or 1)
    kw = _inputs(batch, channels, state, length, groups, h0=h0, full=full, seed=seed)
    old = _cpp_library.CHECKPOINT_EVERY
    _cpp_library.CHECKPOINT_EVERY = checkpoint
    try:
        compare(_entry("reference"), _entry("cpp"), kw, 2)
    finally:
        _cpp_library.CHECKPOINT_EVERY = old


@needs_torch_cpp
def test_torch_cpp_long_sequence_finite():
    kw = _inputs(1, 2, 2, 16384, h0=True)
    leaves = {k: (v.requires_grad_() if v is not None else None) for k, v in kw.items()}
    out, last = _entry("cpp")(**leaves)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    out.sum().backward()
    assert all(torch.isfinite(v.grad).all() for v in leaves.values() if v is not None)
    with torch.no_grad():
        ref, ref_last = _entry("reference")(**kw)
    close_scaled(out.detach(), ref)
    close_scaled(last.detach(), ref_last)


# ------------------------------------------------------------------------------------------- triton
TRITON_LENGTHS = [1, T - 1, T, T + 1, 3 * T + 5]


def _triton_inputs(*args, **kw):
    return _inputs(*args, **kw, device=TRITON_DEVICE)


def _ref(softplus=True):
    def fn(**kw):
        return ss_naive.reference(**kw, delta_softplus=softplus)
    return fn


def _triton(softplus=True, block_d=2):
    def fn(**kw):
        return tss_triton.triton_selective_scan(**kw, delta_softplus=softplus, chunk_size=T, block_d=block_d)
    return fn


@needs_triton
@pytest.mark.parametrize("h0, strong", [(False, False), (True, True)], ids=["zero-h0-weak", "h0-strong"])
@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("length", TRITON_LENGTHS, ids=lambda n: f"L{n}")
def test_torch_triton_matches_reference(length, batch, h0, strong):
    channels = 3 if batch == 1 else 2  # D = 3: a ragged second channel block (kept small: the interpreter is slow)
    kw = _triton_inputs(batch, channels, 2, length, strong=strong, h0=h0, seed=length)
    compare(_ref(), _triton(), kw)


@needs_triton
@pytest.mark.parametrize("groups, full, softplus", [
    (None, False, False), (None, True, True), (None, True, False), (1, True, True), (2, False, False),
    (2, True, True)], ids=["bare-raw-dt", "D-z-bias-softplus", "D-z-bias-raw-dt", "G1-D-z-bias-softplus",
                           "G2-bare-raw-dt", "G2-D-z-bias-softplus"])
def test_torch_triton_options(groups, full, softplus):
    kw = _triton_inputs(1, 6, 3, T + 3, groups, h0=True, full=full, seed=7)  # G2: 3 channels a group; N = 3 padded
    if not softplus:
        kw["delta"] = kw["delta"].abs()
    compare(_ref(softplus), _triton(softplus), kw)


@needs_triton
def test_torch_triton_default_blocks_and_entry_point():
    """impl="triton" through `selective_scan` (default block size: one block) == the reference."""
    kw = _triton_inputs(2, 2, 2, 5, 1, h0=True, seed=3)
    compare(_entry("reference"), _entry("triton"), kw)


@needs_triton
def test_torch_triton_bf16_inputs():
    kw = _triton_inputs(2, 4, 2, T + 1, h0=True, seed=5)
    low = {k: (v if v is None or k == "A" else v.to(torch.bfloat16)) for k, v in kw.items()}
    up = {k: (v if v is None else v.float()) for k, v in low.items()}
    out, last = _triton()(**low)
    ref, ref_last = _ref()(**up)
    assert out.dtype == torch.bfloat16 and last.dtype == F32
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(last, ref_last, rtol=1e-3, atol=1e-3)
    (_, grads), (_, ref_grads) = run_and_grad(_triton(), low), run_and_grad(_ref(), up)
    for k, r in ref_grads.items():
        assert grads[k].dtype == low[k].dtype, k
        torch.testing.assert_close(grads[k].float(), r, rtol=3e-2, atol=3e-2 * max(1.0, r.abs().max().item()))


@needs_triton
def test_torch_triton_edge_cases(monkeypatch):
    kw = _triton_inputs(2, 3, 2, 0, h0=True)
    out, last = tss_triton.triton_selective_scan(**kw)  # empty sequence: the reference's answer
    assert out.shape == (2, 3, 0)
    torch.testing.assert_close(last, kw["initial_state"])
    kw = _triton_inputs(1, 3, 2, 4)
    with pytest.raises(ValueError, match="power of two"):
        tss_triton.triton_selective_scan(**kw, chunk_size=6)
    monkeypatch.setattr(tss_triton, "_INTERPRET", False)
    if TRITON_DEVICE == "cpu":
        with pytest.raises(RuntimeError, match="CUDA tensors"):
            tss_triton.triton_selective_scan(**kw)


_COMPILE_FOR_HOPPER = textwrap.dedent("""
    import os
    os.environ["TRITON_INTERPRET"] = "0"  # real kernels, compiled (not run) for sm_90 with triton's bundled ptxas
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from hybridc_torch.ops.linear_recurrence import triton as tlr
    from hybridc_torch.ops.selective_scan import triton as tss

    LOW = {"u_ptr", "delta_ptr", "z_ptr", "B_ptr", "C_ptr", "out_ptr", "dout_ptr", "du_ptr", "ddelta_ptr",
           "dz_ptr", "a_ptr", "x_ptr", "dh_ptr", "da_ptr", "dx_ptr"}  # bf16 inputs and outputs; states fp32

    def build(kernel, consts, num_warps):
        sig = {p.name: "constexpr" if p.is_constexpr else ("*bf16" if p.name in LOW else "*fp32")
               if p.name.endswith("_ptr") else "i32" for p in kernel.params}
        k = triton.compile(ASTSource(kernel, sig, consts), target=GPUTarget("cuda", 90, 32),
                           options=dict(num_warps=num_warps))
        assert k.asm["cubin"], kernel

    block_d, block_n = tss._blocks(16, 1536, 16, None)  # Mamba-130m: d_inner 1536, N 16
    for full in (True, False):
        flags = dict(HAS_D=full, HAS_Z=full, HAS_BIAS=full, SOFTPLUS=full, BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=16)
        build(tss._ss_fwd_kernel, dict(flags, HAS_H0=full, SAVE_CKPT=True), 8)
        build(tss._ss_bwd_kernel, dict(flags, HAS_DLAST=full), 8)
    build(tlr._lr_fwd_kernel, dict(HAS_H0=True, SAVE_H32=True, BLOCK_D=64, CHUNK=16), 4)
    build(tlr._lr_bwd_kernel, dict(HAS_H0=True, HAS_DLAST=True, BLOCK_D=64, CHUNK=16), 4)
""")


@needs_triton
def test_torch_triton_compiles_for_hopper():
    """The kernels lower through TTIR/TTGIR/LLVM/PTX to an sm_90 cubin (what the interpreter cannot check). The
    linear recurrence's Triton kernels are compiled here too (one subprocess for both ops)."""
    import triton.backends

    if "nvidia" not in triton.backends.backends:
        pytest.skip("triton has no NVIDIA backend here")
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    proc = subprocess.run([sys.executable, "-c", _COMPILE_FOR_HOPPER], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


# ============================================================================= JAX: the reference vs torch's
def _parity_inputs(length, groups, full):
    b, d, n = PARITY_BATCH, 8, 4
    bc = (b, n, length) if groups is None else (b, groups, n, length)
    return dict(u=rand(b, d, length, seed=1), delta=0.5 * rand(b, d, length, seed=2),
                A=-np.abs(rand(d, n, seed=3)) - 0.1, B=rand(*bc, seed=4), C=rand(*bc, seed=5),
                D=rand(d, seed=6) if full else None, z=rand(b, d, length, seed=7) if full else None,
                delta_bias=0.3 * rand(d, seed=8) if full else None,
                initial_state=rand(b, d, n, seed=9) if full else None)


@pytest.mark.parametrize("groups,full", [(None, True), (2, True), (None, False)], ids=["BC", "grouped-BC", "bare"])
@pytest.mark.parametrize("length", [0, 6], ids=lambda n: f"L{n}")
def test_jax_reference_matches_torch(groups, full, length):
    t, j = torch_and_jax(_parity_inputs(length, groups, full))
    t_out, t_last = tss.selective_scan(**t, delta_softplus=full, return_last_state=True)
    j_out, j_last = jss.selective_scan(**j, delta_softplus=full, return_last_state=True)
    close_parity(j_out, t_out.numpy())
    close_parity(j_last, t_last.numpy())
    assert jss.selective_scan(**j, delta_softplus=full).shape == j_out.shape


@pytest.mark.parametrize("groups", [None, 2], ids=["BC", "grouped-BC"])
def test_jax_step_matches_torch(groups):
    t, j = torch_and_jax(_parity_inputs(1, groups, True))
    args = lambda d: (d["initial_state"], d["u"][..., 0], d["delta"][..., 0], d["A"], d["B"][..., 0],  # noqa: E731
                      d["C"][..., 0], d["D"], d["z"][..., 0], d["delta_bias"], True)
    for jv, tv in zip(jss.selective_scan_step(*args(j)), tss.selective_scan_step(*args(t))):
        close_parity(jv, tv.numpy())


def test_jax_entry_points_reject_unknown_impl_and_jit():
    """All three SSM entry points (selective_scan, ssd, linear_recurrence) in one test, kept here."""
    t, j = torch_and_jax(_parity_inputs(3, None, False))
    with pytest.raises(ValueError, match=r"'auto', 'reference'"):
        jss.selective_scan(**j, impl="cuda")
    with pytest.raises(ValueError, match=r"'auto', 'reference'"):
        jssd.ssd(**torch_and_jax(parity_ssd_inputs(3, (4,), False))[1], chunk_size=4, impl="triton")
    with pytest.raises(ValueError, match=r"'auto', 'reference'"):
        jlr.linear_recurrence(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 3)), impl="triton")
    fn = jax.jit(lambda d: jss.selective_scan(**d, impl="reference", return_last_state=True))
    for jv, tv in zip(fn(j), tss.selective_scan(**t, return_last_state=True)):
        close_parity(jv, tv.numpy())


# ======================================================================== JAX: chunk and cpp vs the reference
@pytest.mark.parametrize("length,batch,h0,strong", CASES, ids=[case_id(c) for c in CASES])
def test_jax_chunk_matches_reference(length, batch, h0, strong):
    compare_fast("selective_scan", fast_inputs("selective_scan", batch, length, h0=h0, strong=strong, seed=length))


@needs_jax_cpp
@pytest.mark.parametrize("length,batch,h0,strong", CASES, ids=[case_id(c) for c in CASES])
def test_jax_cpp_matches_reference(length, batch, h0, strong):
    """The C++ kernel as an XLA custom call, checkpointing every T steps (so the lengths cross checkpoint
    boundaries) == the lax.scan reference, values and the gradient of every input."""
    kw = fast_inputs("selective_scan", batch, length, h0=h0, strong=strong, seed=length)
    compare_fast("selective_scan", kw, impl="cpp")


@needs_jax_cpp
def test_jax_cpp_matches_torch_and_runs_under_vmap():
    """Same machine code as torch's impl="cpp": equal to rounding; vmap loops over the mapped axis."""
    cpp_matches_torch_and_runs_under_vmap("selective_scan",
                                          fast_inputs("selective_scan", 3, 3 * T + 5, h0=True, strong=False, seed=11))


@needs_jax_cpp
def test_jax_cpp_fp64_and_absent_options():
    """float64 through the fp64 kernel; no D / z / bias / h0 / groups (zero-size operands -> null pointers)."""
    kw = fast_inputs("selective_scan", 2, 13, h0=False, strong=False, seed=5)
    args = dict(u=kw["u"], delta=np.abs(kw["delta"]), A=kw["A"], B=kw["B"][:, 0], C=kw["C"][:, 0])
    with jax.enable_x64(True):
        a64 = {k: jnp.asarray(v, jnp.float64) for k, v in args.items()}
        out, last = jax.jit(lambda kw: jss.selective_scan(**kw, impl="cpp", return_last_state=True))(a64)
        ref, ref_last = jss_naive.reference(**a64)
        assert out.dtype == jnp.float64 and last.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(last), np.asarray(ref_last), rtol=1e-10, atol=1e-12)
        empty = jss.selective_scan(**{k: v[..., :0] if k in ("u", "delta", "B", "C") else v for k, v in a64.items()},
                                   impl="cpp", return_last_state=True, initial_state=jnp.ones((2, 4, 3)))
        assert empty[0].shape == (2, 4, 0) and bool(jnp.all(empty[1] == 1))  # length 0: the state passes through
    a32 = {k: jnp.asarray(v) for k, v in args.items()}
    g = jax.jit(jax.grad(lambda kw: jss.selective_scan(**kw, impl="cpp").sum()))(a32)
    g_ref = jax.grad(lambda kw: jss_naive.reference(**kw)[0].sum())(a32)
    for name in a32:
        close_fast(g[name], g_ref[name], what=name)


def test_jax_cpp_falls_back_when_disabled(monkeypatch):
    """HYBRIDC_DISABLE_CPP=1: load() gives None and auto picks the XLA forms (for every op with a C++ kernel:
    selective scan, linear recurrence, delta rule, gated delta rule; kept here, one loader for all)."""
    from hybridc_jax.ops import _ffi_library
    from hybridc_jax.ops.delta_rule import chunk as jdr_chunk
    from hybridc_jax.ops.gated_delta_rule import chunk as jgdr_chunk
    from hybridc_jax.ops.linear_recurrence import naive as jlr_naive

    monkeypatch.setattr(_ffi_library._LOADER, "lib", None)
    monkeypatch.setattr(_ffi_library._LOADER, "tried", False)
    monkeypatch.setenv("HYBRIDC_DISABLE_CPP", "1")
    assert _ffi_library.load() is None
    pick = {kernel: op.pick("auto", jax.default_backend()) for kernel, op in jax_ops.OPS.items()}
    assert pick["selective_scan"] is jss_chunk.chunk_selective_scan
    assert pick["linear_recurrence"] is jlr_naive.reference
    assert pick["delta_rule"] is jdr_chunk.scan_chunk_delta_rule
    assert pick["gated_delta_rule"] is jgdr_chunk.scan_chunk_gated_delta_rule
    with pytest.raises(RuntimeError, match="could not be built"):
        jss_cpp.selective_scan_cpp(*(jnp.zeros(s) for s in [(1, 2, 3), (1, 2, 3), (2, 1), (1, 1, 3), (1, 1, 3)]))


def test_jax_chunk_matches_torch_fast():
    """The JAX chunked form against the torch kernel's CPU fast form (impl="auto" there) on the same inputs."""
    chunk_matches_torch_fast("selective_scan", fast_inputs("selective_scan", 3, 3 * T + 5, h0=True, strong=False,
                                                           seed=7))


def test_jax_auto_picks_the_fast_form_and_bad_impl_raises():
    """auto: the C++ kernel as an XLA custom call (measured fastest on CPU), else the chunked selective scan."""
    auto = jss_cpp.selective_scan_cpp if JAX_CPP else jss_chunk.chunk_selective_scan
    auto_and_reference_picks(jax_ops.OPS["selective_scan"], auto, jss_naive.reference)


FAST = [(k, "chunk") for k, op in jax_ops.OPS.items() if "chunk" in op.impls] + ([(k, "cpp") for k in
                                                ("selective_scan", "linear_recurrence", "delta_rule",
                                                 "gated_delta_rule")] if JAX_CPP else [])


# the recurrences with a chunked form (MoE's grouped_matmul is tested in tests/layers/test_moe_jax.py)
@settings(max_examples=8, deadline=None)
@given(fast=st.sampled_from(FAST), batch=st.integers(1, 2), length=st.integers(1, 21),
       chunk=st.sampled_from([2, 3, 5, 8]), h0=st.booleans(), seed=st.integers(0, 99))
def test_jax_fast_property(fast, batch, length, chunk, h0, seed):
    """Chunked forms (chunk size drawn) and the C++ custom calls (checkpoint interval drawn) == the references.
    Draws the op too (all six ops: kept here as one property so the examples stay few)."""
    kernel, impl = fast
    kw = {k: jnp.asarray(v) for k, v in fast_inputs(kernel, batch, length, h0=h0, strong=seed % 2 == 0,
                                                    seed=seed).items() if v is not None}
    out, final = jax.jit(lambda kw: jax_fn(kernel, impl, chunk)(**kw))(kw)
    out_r, final_r = jax.jit(lambda kw: jax_fn(kernel, "reference")(**kw))(kw)
    close_fast(out, out_r)
    close_fast(final, final_r)


def test_jax_long_sequence_stays_finite():
    """16k steps through the auto implementation (the chunked XLA form at chunk 8), then the C++ custom call."""
    kw = long_sequence_stays_finite("selective_scan",
                                    fast_inputs("selective_scan", 1, 16384, h0=True, strong=False), 8)
    if JAX_CPP:  # auto's C++ custom call (the line above runs the chunked XLA form)
        out, final = jax.jit(lambda kw: jax_fn("selective_scan", "cpp", 64)(**kw))(kw)
        assert bool(jnp.all(jnp.isfinite(out))) and bool(jnp.all(jnp.isfinite(final)))


# ------------------------------------------------------------------------------------------- pallas
# L over 1, 7 (= chunk-1), 8, 9, 29 (= 3*chunk+5); features rotate so each is on and off somewhere
PALLAS_CASES = {
    "L1-B1-D8-G1-plain-weak": NS(L=1, B=1, D=8, G=0, z=False, D_skip=False, bias=False, softplus=False, h0=False,
                                 decay="weak"),
    "L7-B3-D12-G2-all-strong": NS(L=7, B=3, D=12, G=2, z=True, D_skip=True, bias=True, softplus=True, h0=True,
                                  decay="strong"),
    "L8-B1-D16-G2-z-h0-weak": NS(L=8, B=1, D=16, G=2, z=True, D_skip=False, bias=False, softplus=False, h0=True,
                                 decay="weak"),
    "L9-B3-D16-G1-softplus-strong": NS(L=9, B=3, D=16, G=1, z=False, D_skip=True, bias=True, softplus=True,
                                       h0=False, decay="strong"),
    "L29-B3-D12-G2-all-mixed": NS(L=29, B=3, D=12, G=2, z=True, D_skip=True, bias=True, softplus=True, h0=True,
                                  decay="mixed"),
}


def _decay_A(rng, decay: str, shape):
    """A < 0: strong |A| in [2, 8] (exp(dt A) ~ 1e-3 .. 0.1), weak in [1e-3, 1e-2], mixed spans both."""
    lo, hi = dict(strong=(2.0, 8.0), weak=(1e-3, 1e-2), mixed=(1e-3, 8.0))[decay]
    return -np.exp(rng.uniform(np.log(lo), np.log(hi), shape))


def _pallas_inputs(c: NS, dtype=jnp.float32, seed=0) -> dict:
    """The reference's keyword inputs for case c (absent options are None); G=0 means B, C of shape (B, N, L)."""
    rng = np.random.default_rng(seed)

    def r(*shape, scale=1.0):
        return jnp.asarray(scale * rng.standard_normal(shape), dtype)

    bc_shape = (c.B, PALLAS_N, c.L) if c.G == 0 else (c.B, c.G, PALLAS_N, c.L)
    delta = r(c.B, c.D, c.L) if c.softplus else jnp.asarray(rng.uniform(0.05, 1.0, (c.B, c.D, c.L)), dtype)
    return dict(u=r(c.B, c.D, c.L), delta=delta, A=jnp.asarray(_decay_A(rng, c.decay, (c.D, PALLAS_N)), dtype),
                B=r(*bc_shape), C=r(*bc_shape), D=r(c.D) if c.D_skip else None, z=r(c.B, c.D, c.L) if c.z else None,
                delta_bias=r(c.D, scale=0.5) if c.bias else None,
                initial_state=r(c.B, c.D, PALLAS_N) if c.h0 else None)


def _pallas_value_and_grads(fn, inputs: dict, softplus: bool, seed=1):
    """jit(value_and_grad) of sum(out * w) + sum(last * w2) w.r.t. every present input -> (out, last, grads)."""
    present = {k: v for k, v in inputs.items() if v is not None}
    out_shape = inputs["u"].shape
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)
    w2 = jnp.asarray(rng.standard_normal(out_shape[:2] + (inputs["A"].shape[1],)), jnp.float32)

    def loss(p):
        out, last = fn(**{**inputs, **p}, delta_softplus=softplus)
        return jnp.sum(out.astype(jnp.float32) * w) + jnp.sum(last * w2), (out, last)

    (_, (out, last)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(present)
    return out, last, grads


def _pallas(**kw):
    return pss.pallas_selective_scan(**kw, block_d=PALLAS_BLOCK, chunk=PALLAS_CHUNK)


@needs_pallas
@pytest.mark.parametrize("case", PALLAS_CASES.values(), ids=PALLAS_CASES.keys())
def test_jax_pallas_matches_reference(case):
    inputs = _pallas_inputs(case)
    out, last, grads = _pallas_value_and_grads(_pallas, inputs, case.softplus)
    ref_out, ref_last, ref_grads = _pallas_value_and_grads(jss.reference, inputs, case.softplus)
    assert out.dtype == jnp.float32 and last.dtype == jnp.float32
    close_pallas(out, ref_out, 1e-4, "out")
    close_pallas(last, ref_last, 1e-4, "last_state")
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        close_pallas(grads[name], ref_grads[name], 1e-4, f"d {name}")


@needs_pallas
def test_jax_pallas_bf16_inputs_vs_fp32_reference():
    """bf16 inputs: outputs and gradients come back in bf16, close to the fp32 reference on the same values."""
    case = PALLAS_CASES["L29-B3-D12-G2-all-mixed"]
    inputs = _pallas_inputs(case, jnp.bfloat16)
    out, last, grads = _pallas_value_and_grads(_pallas, inputs, True)
    upcast = {k: None if v is None else v.astype(jnp.float32) for k, v in inputs.items()}
    ref_out, ref_last, ref_grads = _pallas_value_and_grads(jss.reference, upcast, True)
    assert out.dtype == jnp.bfloat16 and last.dtype == jnp.float32
    close_pallas(out, ref_out, 3e-2, "out")
    close_pallas(last, ref_last, 1e-2, "last_state")
    for name in grads:
        assert grads[name].dtype == jnp.bfloat16, name
        close_pallas(grads[name], ref_grads[name], 5e-2, f"d {name}")


@needs_pallas
def test_jax_pallas_inference_path_eager():
    """Called eagerly outside any transform: the forward kernel without checkpoints."""
    case = PALLAS_CASES["L9-B3-D16-G1-softplus-strong"]
    inputs = _pallas_inputs(case, seed=3)
    out, last = _pallas(**inputs, delta_softplus=True)
    ref_out, ref_last = jss.reference(**inputs, delta_softplus=True)
    close_pallas(out, ref_out, 1e-4, "out")
    close_pallas(last, ref_last, 1e-4, "last_state")


@needs_pallas
def test_jax_pallas_through_entry_point():
    if "pallas" not in jax_ops.OPS["selective_scan"].impls:
        pytest.skip("the selective_scan Op has no 'pallas' entry yet (wired by the lead)")
    inputs = _pallas_inputs(PALLAS_CASES["L7-B3-D12-G2-all-strong"])
    out, last = jss.selective_scan(**inputs, delta_softplus=True, return_last_state=True, impl="pallas")
    ref_out, ref_last = jss.reference(**inputs, delta_softplus=True)
    close_pallas(out, ref_out, 1e-4, "out")
    close_pallas(last, ref_last, 1e-4, "last_state")


# The three tests below cover the linear recurrence's Pallas kernel too (one lowering for both ops).
@needs_pallas
def test_jax_pallas_lowering_available_on_cpu_means_interpreter():
    assert jax.default_backend() != "cpu" or (pss.lowering_available() and plr.lowering_available())


@needs_pallas
def test_jax_pallas_gpu_lowering_emits_triton_kernels():
    """Cross-lower (no GPU needed) value and grad for CUDA: every kernel must pass Pallas' Triton lowering
    (power-of-two tensors, supported primitives) and become a Triton custom call: 2 per op (forward, backward)."""
    u = jnp.ones((1, 12, 5), jnp.bfloat16)
    A, BC, a = -jnp.ones((12, 3), jnp.float32), jnp.ones((1, 2, 3, 5), jnp.bfloat16), jnp.ones((1, 5, 12))

    def loss(u, A, BC, a):
        out, last = pss.pallas_selective_scan(u, u, A, BC, BC, D=A[:, 0], z=u, delta_bias=A[:, 1],
                                              delta_softplus=True, interpret=False, block_d=4, chunk=2)
        h, h_last = plr.pallas_linear_recurrence(a, a, interpret=False, block_d=8)
        return out.astype(jnp.float32).sum() + last.sum() + h.sum() + h_last.sum()

    traced = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).trace(u, A, BC, a)
    text = traced.lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("xla.gpu.triton") == 4


@needs_pallas
def test_jax_pallas_block_d_must_be_a_power_of_two():
    inputs = _pallas_inputs(PALLAS_CASES["L1-B1-D8-G1-plain-weak"])
    with pytest.raises(ValueError, match="power of two"):
        pss.pallas_selective_scan(**inputs, block_d=6)
    with pytest.raises(ValueError, match="power of two"):
        plr.pallas_linear_recurrence(**pallas_lr_inputs(PALLAS_LR_CASES["L1-B1-D8-h0-strong"]), block_d=12)
