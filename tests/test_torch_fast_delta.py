"""Chunked (fast) delta-rule kernels against their sequential references: values, gradients, final states.

Kernels: ``delta_rule`` / ``gated_delta_rule`` (chunked WY / UT-transform form, ``impl="chunk"``) and ``rwkv7``
(chunked generalized delta rule, factorised scores within the fp32 bound, exact pairwise scores past it).
The reference (``impl="reference"``) is the oracle. Small chunk sizes keep the shape grid cheap.

Dimension glossary: B batch, T time, H heads, K key head dim, V value head dim, C chunk size.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridc_torch.ops import OPS, _cpp_library, delta_rule, gated_delta_rule, rwkv7
from hybridc_torch.ops.delta_rule import chunk as dr_chunk
from hybridc_torch.ops.delta_rule import naive as dr_naive
from hybridc_torch.ops.gated_delta_rule import chunk as gdr_chunk
from hybridc_torch.ops.gated_delta_rule import naive as gdr_naive
from hybridc_torch.ops.rwkv7 import chunk as rk_chunk
from hybridc_torch.ops.rwkv7 import naive as rk_naive

H, K, V = 2, 8, 6
KERNELS = ("delta_rule", "gated_delta_rule", "rwkv7")


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: intra-op threads only add contention on a shared 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _inputs(kernel, Bsz, T, *, strong, seed=0, h=H, k_dim=K, v_dim=V, dtype=torch.float32, init=True):
    """Random inputs in the layers' regimes (unit-norm q/k/kk, beta and gates in (0, 1)).

    strong: gated log decay g in (-8, 0) / RWKV w in (-4, 0) per step (weak: about -0.05 / -0.03); for the plain
    delta rule (no decay), beta near 1 (strong erase) instead of small.
    Returns (positional args, initial_state or None).
    """
    gen = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def unit(*shape):
        return F.normalize(rn(*shape), dim=-1)

    h0 = 0.5 * rn(Bsz, h, k_dim, v_dim) if init else None
    if kernel == "rwkv7":
        kk = unit(Bsz, T, h, k_dim)
        w_scale = 4.0 if strong else 0.06
        args = (rn(Bsz, T, h, k_dim), -w_scale * torch.sigmoid(rn(Bsz, T, h, k_dim)), 0.5 * rn(Bsz, T, h, k_dim),
                rn(Bsz, T, h, v_dim), -kk, kk * torch.sigmoid(rn(Bsz, T, h, k_dim)))
    else:
        q, k, v = unit(Bsz, T, h, k_dim), unit(Bsz, T, h, k_dim), rn(Bsz, T, h, v_dim)
        if kernel == "delta_rule":
            beta = 0.9 + 0.1 * torch.sigmoid(rn(Bsz, T, h)) if strong else 0.3 * torch.sigmoid(rn(Bsz, T, h))
            args = (q, k, v, beta)
        else:
            g = -(8.0 if strong else 0.1) * torch.sigmoid(rn(Bsz, T, h))
            args = (q, k, v, g, torch.sigmoid(rn(Bsz, T, h)))
    cast = tuple(a.to(dtype) for a in args)
    return cast, (None if h0 is None else h0.to(dtype))


def _entry(kernel):
    return {"delta_rule": delta_rule, "gated_delta_rule": gated_delta_rule, "rwkv7": rwkv7}[kernel]


def _run(kernel, args, h0, impl, chunk_size=None, grads=True, seed=1):
    """Forward (+ backward of a random projection of o and the final state); returns (o, S, [grads])."""
    args = [a.detach().clone().requires_grad_(grads) for a in args]
    h0 = None if h0 is None else h0.detach().clone().requires_grad_(grads)
    o, S = _entry(kernel)(*args, initial_state=h0, output_final_state=True, impl=impl, chunk_size=chunk_size)
    if not grads:
        return o.detach(), S.detach(), []
    gen = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum()
    loss = loss + (S * torch.randn(S.shape, generator=gen, dtype=S.dtype)).sum()
    loss.backward()
    leaves = args + ([] if h0 is None else [h0])
    return o.detach(), S.detach(), [t.grad for t in leaves]


def _close(actual, expected, rtol=1e-4, atol=1e-5, what=""):
    """rtol plus an atol scaled by the reference's magnitude (fp32 accumulation over long chunks)."""
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale, msg=lambda m: f"{what}: {m}")


def _check(kernel, args, h0, chunk_size, rtol=1e-4, atol=1e-5, impl="chunk"):
    o_r, S_r, g_r = _run(kernel, args, h0, "reference")
    o_c, S_c, g_c = _run(kernel, args, h0, impl, chunk_size)
    assert o_c.shape == o_r.shape and o_c.dtype == o_r.dtype and o_c.is_contiguous()
    assert S_c.shape == S_r.shape and S_c.dtype == S_r.dtype
    _close(o_c, o_r, rtol, atol, "output")
    _close(S_c, S_r, rtol, atol, "final state")
    for i, (gc, gr) in enumerate(zip(g_c, g_r)):
        _close(gc, gr, rtol, 10 * atol, f"grad of input {i}")


CHUNK = 8


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("T", [1, 7, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
@pytest.mark.parametrize("Bsz", [1, 3])
@pytest.mark.parametrize("init", [False, True], ids=["zero_state", "init_state"])
@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
def test_chunk_matches_reference(kernel, T, Bsz, init, strong):
    args, h0 = _inputs(kernel, Bsz, T, strong=strong, init=init, seed=T + 10 * Bsz)
    _check(kernel, args, h0, CHUNK)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("chunk_size", [1, 3, 16, 64])
def test_other_chunk_sizes(kernel, chunk_size):
    args, h0 = _inputs(kernel, 2, 37, strong=False)
    _check(kernel, args, h0, chunk_size)


def test_default_chunk_sizes():
    assert gdr_chunk.chunk_gated_delta_rule.__defaults__[-1] == 64
    assert dr_chunk.chunk_delta_rule.__defaults__[-1] == 64
    assert rk_chunk.chunk_rwkv7.__defaults__[-1] == 16
    for kernel in KERNELS:                       # default chunk size, T spanning several chunks with a ragged tail
        args, h0 = _inputs(kernel, 1, 150, strong=False)
        _check(kernel, args, h0, None)


def test_rwkv7_overflow_fallback(monkeypatch):
    """Past the factorisation bound (|in-chunk cumulative log decay| > 60 in fp32) the exact pairwise scores run."""
    gen = torch.Generator().manual_seed(3)
    args, h0 = _inputs("rwkv7", 2, 40, strong=True)
    args = list(args)
    args[1] = -10.0 * torch.sigmoid(torch.randn(args[1].shape, generator=gen))   # in-chunk sums reach ~-160
    _check("rwkv7", args, h0, 16)
    o_pair, S_pair, _ = _run("rwkv7", args, h0, "chunk", 16, grads=False)
    calls = []
    orig = rk_chunk._pair_scores
    monkeypatch.setattr(rk_chunk, "_pair_scores", lambda *a: calls.append(1) or orig(*a))
    _run("rwkv7", args, h0, "chunk", 16, grads=False)
    assert calls, "the pairwise path should run past the bound"
    calls.clear()
    weak, h0w = _inputs("rwkv7", 2, 40, strong=False)
    _run("rwkv7", weak, h0w, "chunk", 16, grads=False)
    assert not calls, "the factorised path should run within the bound"
    # forcing the pairwise path on moderate decays gives the factorised result
    monkeypatch.setitem(rk_chunk._FACTOR_BOUND, torch.float32, -1.0)
    args_m, h0m = _inputs("rwkv7", 2, 40, strong=True)
    o1, S1, _ = _run("rwkv7", args_m, h0m, "chunk", 16, grads=False)
    monkeypatch.setitem(rk_chunk._FACTOR_BOUND, torch.float32, 60.0)
    o2, S2, _ = _run("rwkv7", args_m, h0m, "chunk", 16, grads=False)
    _close(o1, o2, what="pairwise vs factorised output")
    _close(S1, S2, what="pairwise vs factorised state")
    assert torch.isfinite(o_pair).all() and torch.isfinite(S_pair).all()


CPP_KERNELS = ("delta_rule", "gated_delta_rule")
CPP = _cpp_library.available()
needs_cpp = pytest.mark.skipif(not CPP, reason="no C++ toolchain for the CPU kernels")


@pytest.mark.parametrize("kernel", KERNELS)
def test_auto_on_cpu(kernel, monkeypatch):
    """auto: the C++ kernel for the delta rules (when it builds), the chunked form for RWKV-7; chunk_size passes."""
    op, naive = OPS[kernel], {"delta_rule": dr_naive, "gated_delta_rule": gdr_naive, "rwkv7": rk_naive}[kernel]
    device = torch.zeros(1, 1, 1, 1).device.type
    auto = "cpp" if kernel in CPP_KERNELS and CPP else "chunk"
    assert op.pick("auto", device) is op.get(auto)
    assert op.pick("reference", device) is naive.reference
    with pytest.raises(ValueError, match="'chunk'"):
        op.pick("nope", device)
    seen = []
    monkeypatch.setitem(op._loaded, auto, lambda *a, **kw: seen.append(kw) or (None, None))   # what the entry runs
    args, h0 = _inputs(kernel, 1, 3, strong=False)
    _entry(kernel)(*args, chunk_size=5)
    assert seen and seen[-1]["chunk_size"] == 5
    _entry(kernel)(*args)
    assert "chunk_size" not in seen[-1]
    _entry(kernel)(*args, impl="reference", chunk_size=5)   # the reference ignores chunk_size


@pytest.mark.parametrize("kernel", KERNELS)
def test_empty_sequence_and_no_state(kernel):
    args, h0 = _inputs(kernel, 2, 0, strong=False)
    o, S = _entry(kernel)(*args, initial_state=h0, output_final_state=True, impl="chunk")
    assert o.shape == (2, 0, H, V)
    torch.testing.assert_close(S, h0)
    args, _ = _inputs(kernel, 2, 5, strong=False)
    o, S = _entry(kernel)(*args, impl="chunk")
    assert S is None and o.shape == (2, 5, H, V)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_dtypes(kernel, dtype):
    """Outputs in the input dtype, final state in the accumulation dtype (fp32, or fp64 for fp64)."""
    args, h0 = _inputs(kernel, 2, 19, strong=False, dtype=dtype)
    o_r, S_r = _entry(kernel)(*args, initial_state=h0, output_final_state=True, impl="reference")
    o_c, S_c = _entry(kernel)(*args, initial_state=h0, output_final_state=True, impl="chunk", chunk_size=8)
    assert o_c.dtype == o_r.dtype == dtype and S_c.dtype == S_r.dtype
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(o_c, o_r, **tol)
    torch.testing.assert_close(S_c, S_r, **tol)


@settings(max_examples=12, deadline=None)
@given(kernel=st.sampled_from(KERNELS), Bsz=st.integers(1, 2), T=st.integers(1, 40), h=st.integers(1, 2),
       k_dim=st.integers(1, 9), v_dim=st.integers(1, 9), chunk=st.sampled_from([2, 5, 8, 16]),
       strong=st.booleans(), init=st.booleans(), seed=st.integers(0, 2**16))
def test_property_chunk_equals_reference(kernel, Bsz, T, h, k_dim, v_dim, chunk, strong, init, seed):
    args, h0 = _inputs(kernel, Bsz, T, strong=strong, seed=seed, h=h, k_dim=k_dim, v_dim=v_dim, init=init)
    _check(kernel, args, h0, chunk)


@pytest.mark.parametrize("kernel", KERNELS)
def test_long_sequence_stays_finite(kernel):
    """16k steps at tiny width: chunked output and state finite and bounded (no decay-product underflow)."""
    T = 16384
    args, h0 = _inputs(kernel, 1, T, strong=False, h=1, k_dim=4, v_dim=4)
    o, S = _entry(kernel)(*args, initial_state=h0, output_final_state=True)     # auto: the chunked form on CPU
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    assert float(o.abs().max()) < 1e3 and float(S.abs().max()) < 1e3
    # the tail agrees with the reference started from the chunked state just before it
    cut = T - 50
    _, S_cut = _entry(kernel)(*(a[:, :cut] for a in args), initial_state=h0, output_final_state=True)
    tail = tuple(a[:, cut:] for a in args)
    o_ref, S_ref = _entry(kernel)(*tail, initial_state=S_cut, output_final_state=True, impl="reference")
    _close(o[:, cut:], o_ref, what="tail output")
    _close(S, S_ref, what="final state")
    assert math.isfinite(float(S.norm()))


# ---------------------------------------------------------------------------------- the fused C++ kernel ("cpp")
@needs_cpp
@pytest.mark.parametrize("kernel", CPP_KERNELS)
@pytest.mark.parametrize("T", [1, 15, 16, 17, 53])  # around and across the backward's checkpoint interval (16)
@pytest.mark.parametrize("Bsz,init,strong", [(1, False, False), (3, True, True), (3, True, False), (1, False, True)])
def test_cpp_matches_reference(kernel, T, Bsz, init, strong):
    args, h0 = _inputs(kernel, Bsz, T, strong=strong, init=init, seed=T + 10 * Bsz)
    _check(kernel, args, h0, None, impl="cpp")


@needs_cpp
@pytest.mark.parametrize("kernel", CPP_KERNELS)
def test_cpp_fp64_empty_and_fallback(kernel, monkeypatch):
    args, h0 = _inputs(kernel, 2, 19, strong=False, dtype=torch.float64)
    o_r, S_r, g_r = _run(kernel, args, h0, "reference")
    o_c, S_c, g_c = _run(kernel, args, h0, "cpp")
    assert o_c.dtype == S_c.dtype == torch.float64
    torch.testing.assert_close(o_c, o_r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S_c, S_r, rtol=1e-10, atol=1e-10)
    for gc, gr in zip(g_c, g_r):
        torch.testing.assert_close(gc, gr, rtol=1e-9, atol=1e-9)
    args, h0 = _inputs(kernel, 2, 0, strong=False)
    o, S = _entry(kernel)(*args, initial_state=h0, output_final_state=True, impl="cpp")
    assert o.shape == (2, 0, H, V)
    torch.testing.assert_close(S, h0)
    monkeypatch.setattr(_cpp_library._LOADER, "lib", None)
    monkeypatch.setattr(_cpp_library._LOADER, "tried", True)
    assert OPS[kernel].pick("auto", torch.zeros(1).device.type) is OPS[kernel].get("chunk")
    with pytest.raises(RuntimeError, match="unavailable"):
        _entry(kernel)(*args, impl="cpp")


@needs_cpp
@settings(max_examples=10, deadline=None)
@given(kernel=st.sampled_from(CPP_KERNELS), Bsz=st.integers(1, 2), T=st.integers(1, 40), h=st.integers(1, 2),
       k_dim=st.integers(1, 9), v_dim=st.integers(1, 9), strong=st.booleans(), init=st.booleans(),
       seed=st.integers(0, 2**16))
def test_property_cpp_equals_reference(kernel, Bsz, T, h, k_dim, v_dim, strong, init, seed):
    args, h0 = _inputs(kernel, Bsz, T, strong=strong, seed=seed, h=h, k_dim=k_dim, v_dim=v_dim, init=init)
    _check(kernel, args, h0, None, impl="cpp")
