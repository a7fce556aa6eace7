"""Fast JAX kernels == their `lax.scan` references (values and `jax.grad` of every input) and == the torch fast kernels.

Kernels: selective scan (chunked, custom_vjp), SSD (chunked), delta rule / gated delta rule (WY/UT chunked),
RWKV-7 (chunked, factorised or exact pairwise scores), linear recurrence (two-level chunked); and the "scan_chunk"
impls that auto picks for SSD and the delta family (lax.scan values, chunked gradients). Small chunk sizes
(T = 8) keep the shape grid cheap while every length class is hit: 1, 7 (= T-1), T, T+1, 3T+5; batch 1 and 3, with
and without an initial state, strong and weak decay, final state compared. Each case is one jitted forward+grad of
a fixed random linear functional of (output, final state) per implementation.

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels    N: state size    G: groups    H: heads    P: head dim
    K: key head dim    V: value head dim
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridc_jax.ops import OPS, _ffi_library
from hybridc_jax.ops import delta_rule, gated_delta_rule, linear_recurrence, rwkv7, selective_scan, ssd
from hybridc_jax.ops.delta_rule import chunk as jdr_chunk
from hybridc_jax.ops.delta_rule import cpp as jdr_cpp
from hybridc_jax.ops.gated_delta_rule import chunk as jgdr_chunk
from hybridc_jax.ops.gated_delta_rule import cpp as jgdr_cpp
from hybridc_jax.ops.linear_recurrence import cpp as jlr_cpp
from hybridc_jax.ops.linear_recurrence import naive as jlr_naive
from hybridc_jax.ops.rwkv7 import chunk as jrk_chunk
from hybridc_jax.ops.rwkv7 import naive as jrk_naive
from hybridc_jax.ops.selective_scan import chunk as jss_chunk
from hybridc_jax.ops.selective_scan import cpp as jss_cpp
from hybridc_jax.ops.selective_scan import naive as jss_naive
from hybridc_jax.ops.ssd import chunk as jssd_chunk

# the torch op packages (entry point, step); `from hybridc_torch.ops import ssd` gives the entry callable itself
tdr, tgdr, tlr, trk, tss, tssd = (importlib.import_module(f"hybridc_torch.ops.{op}") for op in (
    "delta_rule", "gated_delta_rule", "linear_recurrence", "rwkv7", "selective_scan", "ssd"))

T = 8
LENGTHS = [1, T - 1, T, T + 1, 3 * T + 5]


# ------------------------------------------------------------------------------------------------ inputs
def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def inputs(kernel, batch, length, *, h0, strong, seed=0):
    """Random fp32 numpy inputs (a dict of keyword arguments, None entries allowed) at tiny widths."""
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    u = lambda *s: rng.random(s, dtype=np.float32)  # noqa: E731
    if kernel == "selective_scan":  # D4 (2 groups) N3
        return dict(u=r(batch, 4, length), delta=r(batch, 4, length) * (1.0 if strong else 0.3),
                    A=-(u(4, 3) * (6.0 if strong else 0.5) + (1.0 if strong else 0.01)),
                    B=r(batch, 2, 3, length), C=r(batch, 2, 3, length), D=r(4), z=r(batch, 4, length),
                    delta_bias=r(4) * 0.3, initial_state=r(batch, 4, 3) if h0 else None)
    if kernel == "ssd":  # H4 P3 G2 N5
        return dict(x=r(batch, length, 4, 3), dt=r(batch, length, 4) * (1.0 if strong else 0.3),
                    A=-(u(4) * (8.0 if strong else 0.5) + (2.0 if strong else 0.01)), B=r(batch, length, 2, 5),
                    C=r(batch, length, 2, 5), D=r(4), z=r(batch, length, 4, 3), dt_bias=r(4) * 0.3,
                    initial_states=r(batch, 4, 3, 5) if h0 else None)
    if kernel == "linear_recurrence":  # D5
        lo = 0.0 if strong else 0.9
        return dict(a=lo + (1 - lo) * u(batch, length, 5), x=r(batch, length, 5),
                    initial_state=r(batch, 5) if h0 else None)
    qk = dict(q=_unit(r(batch, length, 2, 4)), k=_unit(r(batch, length, 2, 4)), v=r(batch, length, 2, 3))
    state = dict(initial_state=r(batch, 2, 4, 3) if h0 else None)
    if kernel == "delta_rule":  # H2 K4 V3
        return dict(**qk, beta=_sigmoid(r(batch, length, 2)), **state)
    if kernel == "gated_delta_rule":
        g = -np.log1p(np.exp(r(batch, length, 2))) * (3.0 if strong else 0.05)  # log decay
        return dict(**qk, g=g.astype(np.float32), beta=_sigmoid(r(batch, length, 2)), **state)
    if kernel == "rwkv7":  # w: RWKV-7's range (> -0.607) when weak; far beyond it (exact pairwise path) when strong
        w = -np.exp(-0.5 - _sigmoid(r(batch, length, 2, 4))) * (40.0 if strong else 1.0)
        kk = _unit(r(batch, length, 2, 4))
        return dict(r=r(batch, length, 2, 4), w=w.astype(np.float32), k=qk["k"], v=qk["v"], a=-kk,
                    b=kk * _sigmoid(r(batch, length, 2, 4)), **state)
    raise KeyError(kernel)


# ------------------------------------------------------------------------------------------- entry points
def jax_fn(kernel, impl, chunk=T):
    """Callable(**inputs) -> (out, final state) through the public JAX entry point."""
    chunked = impl != "reference"

    def fn(**kw):
        if kernel == "selective_scan" and impl == "cpp":  # `chunk`: the C++ kernel's checkpoint interval
            return jss_cpp.selective_scan_cpp(**kw, delta_softplus=True, checkpoint_every=chunk)
        if kernel == "selective_scan":
            f = functools.partial(jss_chunk.chunk_selective_scan, chunk_size=chunk) if chunked else jss_naive.reference
            return f(**kw, delta_softplus=True)
        if kernel == "ssd":
            return ssd(**kw, chunk_size=chunk, dt_softplus=True, return_final_states=True, impl=impl)
        if kernel == "linear_recurrence":
            return linear_recurrence(**kw, impl=impl, chunk_size=chunk if chunked else None)
        mod = {"delta_rule": delta_rule, "gated_delta_rule": gated_delta_rule, "rwkv7": rwkv7}[kernel]
        return mod(**kw, output_final_state=True, impl=impl, chunk_size=chunk if chunked else None)  # None: default
    return fn


def torch_fast(kernel, kw):
    """The torch kernel with impl="auto" (its CPU fast form) on the same inputs: (out, final) as numpy."""
    t = {k: None if v is None else torch.from_numpy(np.array(v)) for k, v in kw.items()}
    if kernel == "selective_scan":
        out = tss.selective_scan(**{k: v for k, v in t.items() if k != "initial_state"}, delta_softplus=True,
                                 return_last_state=True, initial_state=t["initial_state"])
    elif kernel == "ssd":
        out = tssd.ssd(**t, chunk_size=T, dt_softplus=True, return_final_states=True)
    elif kernel == "linear_recurrence":
        out = tlr.linear_recurrence(**t)
    else:
        fn = {"delta_rule": tdr.delta_rule, "gated_delta_rule": tgdr.gated_delta_rule, "rwkv7": trk.rwkv7}[kernel]
        out = fn(**t, output_final_state=True)
    return [o.detach().numpy() for o in out]


KERNELS = ["selective_scan", "ssd", "delta_rule", "gated_delta_rule", "rwkv7", "linear_recurrence"]
# What auto picks (measured fastest on CPU, see the module docstrings): the C++ kernels as XLA custom calls for the
# selective scan and the linear recurrence (else the chunked selective scan and the lax.scan linear recurrence); the
# lax.scan forward with the chunked backward ("scan_chunk") for SSD and the delta family.
CPP = _ffi_library.available()
needs_cpp = pytest.mark.skipif(not CPP, reason="no C++ toolchain for the CPU kernels")
AUTO = {"selective_scan": jss_cpp.selective_scan_cpp if CPP else jss_chunk.chunk_selective_scan,
        "ssd": jssd_chunk.scan_chunk_ssd,
        "delta_rule": jdr_cpp.delta_rule_cpp if CPP else jdr_chunk.scan_chunk_delta_rule,
        "gated_delta_rule": jgdr_cpp.gated_delta_rule_cpp if CPP else jgdr_chunk.scan_chunk_gated_delta_rule,
        "rwkv7": jrk_chunk.scan_chunk_rwkv7,
        "linear_recurrence": jlr_cpp.linear_recurrence_cpp if CPP else jlr_naive.reference}
SCAN_CHUNK = ["ssd", "delta_rule", "gated_delta_rule", "rwkv7"]
REFERENCE = {kernel: importlib.import_module(f"hybridc_jax.ops.{kernel}.naive").reference for kernel in KERNELS}


@functools.lru_cache(maxsize=None)
def value_and_grads(kernel, impl, chunk=T):
    """Jitted (out, final), d/d(every input) of sum(out * w_out) + sum(final * w_final) for fixed random w."""
    fn = jax_fn(kernel, impl, chunk)

    def loss(kw):
        out, final = fn(**kw)
        w_out = jnp.cos(jnp.arange(out.size, dtype=jnp.float32).reshape(out.shape))
        w_fin = jnp.sin(jnp.arange(final.size, dtype=jnp.float32).reshape(final.shape))
        return jnp.sum(out * w_out) + jnp.sum(final * w_fin), (out, final)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def _close(actual, expected, rtol=1e-4, atol=1e-5, what=""):
    """rtol plus an absolute tolerance scaled by the reference's magnitude (sums of many fp32 terms)."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol * scale, err_msg=what)


def compare(kernel, kw, chunk=T, impl="chunk"):
    """Fast (`impl`) vs reference: outputs, final state and the gradient of every input."""
    kw = {k: jnp.asarray(v) for k, v in kw.items() if v is not None}
    (_, (out_r, fin_r)), g_r = value_and_grads(kernel, "reference")(kw)
    (_, (out_f, fin_f)), g_f = value_and_grads(kernel, impl, chunk)(kw)
    assert out_f.shape == out_r.shape and out_f.dtype == out_r.dtype and fin_f.shape == fin_r.shape
    _close(out_f, out_r, what="out")
    _close(fin_f, fin_r, what="final state")
    for name in kw:
        _close(g_f[name], g_r[name], what=f"grad {name}")


# -------------------------------------------------------------------------------------------------- tests
# Every length class, batch 1 and 3, with and without h0, weak and strong decay (not the full cross product:
# each case compiles two gradients).
CASES = [(1, 1, False, False), (T - 1, 3, True, True), (T, 1, True, False), (T + 1, 3, False, True),
         (3 * T + 5, 3, True, False)]
LIGHT = {"delta_rule", "linear_recurrence"}  # no decay / a cheap kernel: fewer cases
GRID = [(kernel, *case) for kernel in KERNELS for i, case in enumerate(CASES) if kernel not in LIGHT or i % 2 == 0]
GRID_IDS = [f"{k}-L{L}-B{b}-{'h0' if h else 'zero'}-{'strong' if s else 'weak'}" for k, L, b, h, s in GRID]


@pytest.mark.parametrize("kernel,length,batch,h0,strong", GRID, ids=GRID_IDS)
def test_fast_matches_reference_values_and_grads(kernel, length, batch, h0, strong):
    compare(kernel, inputs(kernel, batch, length, h0=h0, strong=strong, seed=length))


CPP_KERNELS = ["selective_scan", "linear_recurrence", "delta_rule", "gated_delta_rule"]
CPP_GRID = [(kernel, *case) for kernel in CPP_KERNELS for case in CASES]


@needs_cpp
@pytest.mark.parametrize("kernel,length,batch,h0,strong", CPP_GRID,
                         ids=[f"{k}-L{L}-B{b}-{'h0' if h else 'zero'}-{'strong' if s else 'weak'}"
                              for k, L, b, h, s in CPP_GRID])
def test_cpp_custom_call_matches_reference_values_and_grads(kernel, length, batch, h0, strong):
    """The C++ kernels as XLA custom calls (selective scan checkpointing every T steps, so the lengths cross
    checkpoint boundaries; the delta rules checkpoint every 16) == the lax.scan references, values and the
    gradient of every input."""
    compare(kernel, inputs(kernel, batch, length, h0=h0, strong=strong, seed=length), impl="cpp")


@needs_cpp
@pytest.mark.parametrize("kernel", CPP_KERNELS)
def test_cpp_custom_call_matches_torch_and_runs_under_vmap(kernel):
    """Same machine code as torch's impl="cpp": equal to rounding; vmap loops over the mapped axis."""
    kw = inputs(kernel, 3, 3 * T + 5, h0=True, strong=False, seed=11)
    jkw = {k: jnp.asarray(v) for k, v in kw.items() if v is not None}
    out, final = jax.jit(lambda kw: jax_fn(kernel, "cpp", T)(**kw))(jkw)
    t_out, t_final = torch_fast(kernel, kw)
    _close(out, t_out, rtol=1e-5, what="out")
    _close(final, t_final, rtol=1e-5, what="final state")
    stacked = {k: jnp.stack([v, 0.5 * v]) for k, v in jkw.items()}
    v_out, v_final = jax.jit(jax.vmap(lambda kw: jax_fn(kernel, "cpp", T)(**kw)))(stacked)
    r_out, r_final = jax_fn(kernel, "reference")(**{k: 0.5 * v for k, v in jkw.items()})
    _close(v_out[0], out)
    _close(v_out[1], r_out)
    _close(v_final[1], r_final)


@needs_cpp
def test_cpp_custom_call_fp64_and_absent_options():
    """float64 through the fp64 kernel; no D / z / bias / h0 / groups (zero-size operands -> null pointers)."""
    kw = inputs("selective_scan", 2, 13, h0=False, strong=False, seed=5)
    args = dict(u=kw["u"], delta=np.abs(kw["delta"]), A=kw["A"], B=kw["B"][:, 0], C=kw["C"][:, 0])
    with jax.enable_x64(True):
        a64 = {k: jnp.asarray(v, jnp.float64) for k, v in args.items()}
        out, last = jax.jit(lambda kw: selective_scan(**kw, impl="cpp", return_last_state=True))(a64)
        ref, ref_last = jss_naive.reference(**a64)
        assert out.dtype == jnp.float64 and last.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(last), np.asarray(ref_last), rtol=1e-10, atol=1e-12)
        empty = selective_scan(**{k: v[..., :0] if k in ("u", "delta", "B", "C") else v for k, v in a64.items()},
                                   impl="cpp", return_last_state=True, initial_state=jnp.ones((2, 4, 3)))
        assert empty[0].shape == (2, 4, 0) and bool(jnp.all(empty[1] == 1))  # length 0: the state passes through
    a32 = {k: jnp.asarray(v) for k, v in args.items()}
    g = jax.jit(jax.grad(lambda kw: selective_scan(**kw, impl="cpp").sum()))(a32)
    g_ref = jax.grad(lambda kw: jss_naive.reference(**kw)[0].sum())(a32)
    for name in a32:
        _close(g[name], g_ref[name], what=name)


def test_cpp_falls_back_when_disabled(monkeypatch):
    """HYBRIDC_DISABLE_CPP=1: load() gives None and auto picks the XLA forms."""
    monkeypatch.setattr(_ffi_library._LOADER, "lib", None)
    monkeypatch.setattr(_ffi_library._LOADER, "tried", False)
    monkeypatch.setenv("HYBRIDC_DISABLE_CPP", "1")
    assert _ffi_library.load() is None
    pick = {kernel: OPS[kernel].pick("auto", jax.default_backend()) for kernel in KERNELS}
    assert pick["selective_scan"] is jss_chunk.chunk_selective_scan
    assert pick["linear_recurrence"] is jlr_naive.reference
    assert pick["delta_rule"] is jdr_chunk.scan_chunk_delta_rule
    assert pick["gated_delta_rule"] is jgdr_chunk.scan_chunk_gated_delta_rule
    with pytest.raises(RuntimeError, match="could not be built"):
        jss_cpp.selective_scan_cpp(*(jnp.zeros(s) for s in [(1, 2, 3), (1, 2, 3), (2, 1), (1, 1, 3), (1, 1, 3)]))


@pytest.mark.parametrize("kernel", SCAN_CHUNK)
def test_scan_chunk_values_and_grads(kernel):
    """impl "scan_chunk" (auto): the reference's values, the chunked form's gradients (custom VJP)."""
    compare(kernel, inputs(kernel, 3, 3 * T + 5, h0=True, strong=False, seed=3), impl="scan_chunk")


@pytest.mark.parametrize("kernel", KERNELS)
def test_fast_matches_torch_fast_kernel(kernel):
    """The JAX chunked forms against the torch kernels' CPU fast forms (impl="auto" there) on the same inputs."""
    kw = inputs(kernel, 3, 3 * T + 5, h0=True, strong=False, seed=7)
    out, final = jax.jit(lambda kw: jax_fn(kernel, "chunk", T)(**kw))(
        {k: jnp.asarray(v) for k, v in kw.items() if v is not None})
    t_out, t_final = torch_fast(kernel, kw)
    _close(out, t_out, what="out")
    _close(final, t_final, what="final state")


@pytest.mark.parametrize("kernel", KERNELS)
def test_auto_picks_the_fast_form_and_bad_impl_raises(kernel):
    op = OPS[kernel]
    assert op.pick("auto", jax.default_backend()) is AUTO[kernel]
    assert op.pick("reference", jax.default_backend()) is REFERENCE[kernel]
    with pytest.raises(ValueError, match="valid choices"):
        op.pick("nope", jax.default_backend())


def test_chunk_64_and_selective_scan_groups_off():
    """The delta rule's default chunk (64: six block-doubling levels) on a ragged length; B/C without a group axis."""
    compare("gated_delta_rule", inputs("gated_delta_rule", 1, 70, h0=True, strong=False), 64)
    kw = inputs("selective_scan", 2, 20, h0=True, strong=True)
    kw["B"], kw["C"] = kw["B"][:, 0], kw["C"][:, 0]  # (B, N, L): one group shared by all channels
    compare("selective_scan", kw, 8)


def test_rwkv7_exact_path_under_vmap_has_finite_grads():
    """Under vmap `lax.cond` runs both branches: the factorised one must stay finite for decays past its bound."""
    kw = {k: jnp.asarray(v) for k, v in inputs("rwkv7", 2, 11, h0=True, strong=True).items()}

    def one(kw):
        kw = {k: v[None] for k, v in kw.items()}
        o, s = jrk_chunk.chunk_rwkv7(**kw, output_final_state=True, chunk_size=T)
        return o[0], s[0]

    o, s = jax.jit(jax.vmap(one))(kw)
    o_ref, s_ref = jrk_naive.reference(**kw, output_final_state=True)
    _close(o, o_ref)
    _close(s, s_ref)
    g = jax.jit(jax.grad(lambda w: jnp.sum(jax.vmap(one)({**kw, "w": w})[0])))(kw["w"])
    assert bool(jnp.all(jnp.isfinite(g)))


def test_bf16_inputs_keep_their_dtype():
    for kernel in ["ssd", "gated_delta_rule"]:
        kw = {k: jnp.asarray(v) for k, v in inputs(kernel, 1, 9, h0=False, strong=False).items() if v is not None}
        out, final = jax.jit(lambda kw: jax_fn(kernel, "chunk", 4)(**kw))(
            {k: v.astype(jnp.bfloat16) for k, v in kw.items()})
        out_r, _ = jax.jit(lambda kw: jax_fn(kernel, "reference")(**kw))(kw)
        assert out.dtype == jnp.bfloat16 and final.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(out_r), rtol=5e-2, atol=5e-2)


FAST = [(k, "chunk") for k in KERNELS] + ([(k, "cpp") for k in CPP_KERNELS] if CPP else [])


@settings(max_examples=8, deadline=None)
@given(fast=st.sampled_from(FAST), batch=st.integers(1, 2), length=st.integers(1, 21),
       chunk=st.sampled_from([2, 3, 5, 8]), h0=st.booleans(), seed=st.integers(0, 99))
def test_property_fast_equals_reference_values(fast, batch, length, chunk, h0, seed):
    """Chunked forms (chunk size drawn) and the C++ custom calls (checkpoint interval drawn) == the references."""
    kernel, impl = fast
    kw = {k: jnp.asarray(v) for k, v in inputs(kernel, batch, length, h0=h0, strong=seed % 2 == 0,
                                                 seed=seed).items() if v is not None}
    out, final = jax.jit(lambda kw: jax_fn(kernel, impl, chunk)(**kw))(kw)
    out_r, final_r = jax.jit(lambda kw: jax_fn(kernel, "reference")(**kw))(kw)
    _close(out, out_r)
    _close(final, final_r)


@pytest.mark.parametrize("kernel", KERNELS)
def test_long_sequence_stays_finite(kernel):
    """16k steps through the auto implementation at its default chunk size (SSD: the Mamba-2 default 256)."""
    kw = {k: jnp.asarray(v) for k, v in inputs(kernel, 1, 16384, h0=True, strong=False).items()}
    chunk = {"selective_scan": 8, "ssd": 256}.get(kernel)
    out, final = jax.jit(lambda kw: jax_fn(kernel, "auto", chunk)(**kw))(kw)
    assert bool(jnp.all(jnp.isfinite(out))) and bool(jnp.all(jnp.isfinite(final)))
    if kernel == "selective_scan" and CPP:  # auto's C++ custom call (the line above runs the chunked XLA form)
        out, final = jax.jit(lambda kw: jax_fn(kernel, "cpp", 64)(**kw))(kw)
        assert bool(jnp.all(jnp.isfinite(out))) and bool(jnp.all(jnp.isfinite(final)))
