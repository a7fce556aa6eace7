"""ssd (Mamba-2's state space duality): every implementation of both backends against the sequential reference.

torch: the reference against the quadratic (masked attention) form in float64 and transformers'
``mamba2_chunk_scan``; the chunked form (``chunk``) and the Triton kernels (``triton``, through Triton's interpreter
on CPU) against the reference in values and the gradients of every input. JAX: the reference against torch's on the
same numbers; the chunked form (``chunk``) and ``scan_chunk`` (lax.scan values, the chunked form's gradients)
against the JAX reference, values and ``jax.grad``. Lengths walk every class of the chunked walk (1, C-1, C, C+1,
2C+3, 3C+5 with a small chunk C = 8).

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups    N: state size    C: chunk
"""

import importlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridc_jax import ops as jax_ops
from hybridc_jax.ops.ssd import chunk as jssd_chunk
from hybridc_jax.ops.ssd import naive as jssd_naive
from hybridc_torch.ops import OPS, _cpp_library, _triton, ssd, ssd_step
from hybridc_torch.ops.ssd import naive as ssd_naive
from ops._inputs import fast_inputs, oracle_ssd_inputs, parity_ssd_inputs, torch_and_jax, triton_ssd_inputs
from ops._jax_checks import (CASES, JAX_CPP, auto_and_reference_picks, bf16_inputs_keep_their_dtype, case_id,
                             chunk_matches_torch_fast, close_parity, compare_fast, long_sequence_stays_finite)
from ops._torch_checks import (TRITON_CASE_IDS, TRITON_CASES, TRITON_CHUNK, TRITON_DEVICE, TRITON_LENGTHS, close_scaled,
                               compare, compare_10x_grads, decay_matrix, needs_triton, run_and_grad_f32, ssd_fn)

# the op packages (entry point, step, reference); `from hybridc_jax.ops import ssd` gives the entry callable itself
jssd, tssd = (importlib.import_module(f"hybridc_{backend}.ops.ssd") for backend in ("jax", "torch"))

T = 8  # the chunk in the fast-form tests
F32, F64 = torch.float32, torch.float64
# the Triton tests' torch threads: one (conftest's module-scoped fixture: from the first of them to the module's end)
single_thread = pytest.mark.usefixtures("single_thread")


# ============================================================================ torch: the reference's oracles
ORACLE_LENGTHS = [1, 7, 33]


def _closed_form(x, dt, A, B, C, D, dt_bias, h0, z=None):
    """SSD quadratic (masked attention) form: y_t = sum_s (C_t . B_s) exp(S_t - S_s) dt_s x_s + C_t exp(S_t) h0."""
    heads = x.shape[2]
    dt = F.softplus(dt + dt_bias)  # (B, L, H)
    Bh = B.repeat_interleave(heads // B.shape[2], dim=2)  # (B, L, H, N)
    Ch = C.repeat_interleave(heads // C.shape[2], dim=2)  # (B, L, H, N)
    log_a = (dt * A).transpose(1, 2)  # (B, H, L)
    M = decay_matrix(log_a)  # (B, H, L, L)
    scores = torch.einsum("bthn,bshn->bhts", Ch, Bh) * M  # (B, H, L, L)
    y = torch.einsum("bhts,bsh,bshp->bthp", scores, dt, x)  # (B, L, H, P)
    decay0 = torch.exp(torch.cumsum(log_a, dim=-1))  # (B, H, L)
    y = y + torch.einsum("bthn,bhpn,bht->bthp", Ch, h0, decay0) + D[:, None] * x
    final = torch.einsum("bhs,bsh,bshp,bshn->bhpn", M[:, :, -1], dt, x, Bh) + decay0[..., -1, None, None] * h0
    return (y if z is None else y * F.silu(z)), final


@pytest.mark.parametrize("length", ORACLE_LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("groups", [1, 2], ids=lambda g: f"G{g}")
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero-h0", "h0"])
def test_torch_reference_matches_quadratic_form(length, groups, with_h0):
    kw = oracle_ssd_inputs(2, length, 4, 3, groups, 5)
    h0 = torch.randn(2, 4, 3, 5, dtype=F64) if with_h0 else torch.zeros(2, 4, 3, 5, dtype=F64)
    y, final = ssd(**kw, chunk_size=8, initial_states=h0 if with_h0 else None, dt_softplus=True,
                   return_final_states=True)
    ref_y, ref_final = _closed_form(**kw, h0=h0)
    torch.testing.assert_close(y, ref_y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, ref_final, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("length", ORACLE_LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("chunk", [4, 16], ids=lambda c: f"chunk{c}")
def test_torch_reference_matches_transformers_chunked(length, chunk):
    from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan

    kw = oracle_ssd_inputs(2, length, 4, 3, 2, 5, dtype=torch.float32, seed=1)
    h0 = torch.randn(2, 4, 3, 5)
    y, final = ssd(**kw, chunk_size=chunk, initial_states=h0, dt_softplus=True, return_final_states=True)
    hf_y, hf_final = mamba2_chunk_scan(kw["x"], kw["dt"], kw["A"], kw["B"], kw["C"], chunk, D=kw["D"],
                                       dt_bias=kw["dt_bias"], initial_states=h0, dt_softplus=True,
                                       return_final_states=True)
    torch.testing.assert_close(y, hf_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, hf_final, rtol=1e-5, atol=1e-5)


def test_torch_reference_gate_and_per_channel_D():
    kw = oracle_ssd_inputs(2, 7, 4, 3, 1, 5, seed=2)
    z = torch.randn(2, 7, 4, 3, dtype=F64)
    D_hp = torch.randn(4, 3, dtype=F64)
    y = ssd(**{**kw, "D": D_hp}, chunk_size=4, z=z, dt_softplus=True)
    base = ssd(**{**kw, "D": None}, chunk_size=4, dt_softplus=True)
    torch.testing.assert_close(y, (base + D_hp * kw["x"]) * F.silu(z), rtol=1e-12, atol=1e-12)


def test_torch_step_equals_reference_one_step():
    kw = oracle_ssd_inputs(3, 1, 4, 2, 2, 3, seed=3)
    h0 = torch.randn(3, 4, 2, 3, dtype=F64)
    z = torch.randn(3, 1, 4, 2, dtype=F64)
    y, final = ssd(**kw, chunk_size=1, z=z, initial_states=h0, dt_softplus=True, return_final_states=True)
    h0_copy = h0.clone()
    y_t, new = ssd_step(h0, kw["x"][:, 0], kw["dt"][:, 0], kw["A"], kw["B"][:, 0], kw["C"][:, 0], kw["D"],
                        z[:, 0], kw["dt_bias"], True)
    torch.testing.assert_close(y_t, y[:, 0], rtol=0, atol=1e-14)
    torch.testing.assert_close(new, final, rtol=0, atol=1e-14)
    assert torch.equal(h0, h0_copy)


def test_torch_impl_registry_and_unknown_impl():
    op = OPS["ssd"]
    assert "reference" in op.impls and len(op.impls) >= 2  # the reference plus a fast CPU kernel
    assert op.pick("reference") is ssd_naive.reference
    assert op.pick("auto", device="cuda") is op.get("triton")  # the Triton kernels (triton is installed)
    with pytest.raises(ValueError, match="auto.*reference"):
        op.pick("triton-nope")


# ============================================================================== torch: chunk vs the reference
LENGTHS = [1, T - 1, T, T + 1, 2 * T + 3, 3 * T + 5]


def _inputs(batch, length, heads, head_dim, groups, state, *, strong=False, h0=False, dtype=F32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(
        x=r(batch, length, heads, head_dim), dt=r(batch, length, heads) * (1.0 if strong else 0.3),
        A=-(torch.rand(heads, generator=g, dtype=dtype) * (8.0 if strong else 0.5) + (2.0 if strong else 0.01)),
        B=r(batch, length, groups, state), C=r(batch, length, groups, state), D=r(heads),
        z=r(batch, length, heads, head_dim), dt_bias=r(heads) * 0.3,
        initial_states=r(batch, heads, head_dim, state) if h0 else None,
    )


def _entry(impl, chunk_size=T):
    def fn(**kw):
        return ssd(**kw, chunk_size=chunk_size, dt_softplus=True, return_final_states=True, impl=impl)
    return fn


@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
@pytest.mark.parametrize("h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
def test_torch_chunk_matches_reference(length, batch, h0, strong):
    kw = _inputs(batch, length, 4, 3, 2, 5, strong=strong, h0=h0, seed=length)
    compare(_entry("reference"), _entry("chunk"), kw, 2)


def test_torch_chunk_options_and_dtypes():
    kw = _inputs(2, 13, 4, 3, 1, 5, h0=True)
    kw["D"] = torch.randn(4, 3)  # D per (head, channel)
    kw.pop("z")
    compare(_entry("reference"), _entry("chunk", 4), kw, 2)
    for dtype in (torch.float64, torch.bfloat16):
        kw = _inputs(1, 9, 2, 2, 1, 3, dtype=dtype)
        y, final = ssd(**kw, chunk_size=4, return_final_states=True, impl="chunk")
        y_ref, final_ref = ssd(**kw, chunk_size=4, return_final_states=True, impl="reference")
        assert y.dtype == dtype and final.dtype == final_ref.dtype
        tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(y, y_ref, **tol)
        torch.testing.assert_close(final, final_ref, **tol)


def test_torch_chunk_size_honoured_and_auto():
    kw = _inputs(1, 20, 2, 2, 1, 3, h0=True)
    outs = [ssd(**kw, chunk_size=c, return_final_states=True, impl="chunk") for c in (1, 3, 8, 64)]
    for y, f in outs[1:]:
        close_scaled(y, outs[0][0])
        close_scaled(f, outs[0][1])
    assert OPS["ssd"].pick("auto", "cpu") is OPS["ssd"].get("cpp" if _cpp_library.available() else "chunk")
    assert OPS["ssd"].pick("reference", "cpu") is ssd_naive.reference


@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 2), length=st.integers(1, 30), heads_per_group=st.integers(1, 2),
       groups=st.integers(1, 2), head_dim=st.integers(1, 3), state=st.integers(1, 4), chunk=st.integers(1, 9),
       h0=st.booleans(), seed=st.integers(0, 2**16))
def test_torch_chunk_property(batch, length, heads_per_group, groups, head_dim, state, chunk, h0, seed):
    kw = _inputs(batch, length, heads_per_group * groups, head_dim, groups, state, h0=h0, seed=seed)
    compare(_entry("reference"), _entry("chunk", chunk), kw, 2)


def test_torch_chunk_long_sequence_finite():
    kw = _inputs(1, 16384, 2, 2, 1, 2, h0=True)
    kw.pop("z")
    y, final = ssd(**kw, chunk_size=64, return_final_states=True, impl="chunk")
    assert torch.isfinite(y).all() and torch.isfinite(final).all()
    y_ref, final_ref = ssd(**kw, chunk_size=64, return_final_states=True, impl="reference")
    close_scaled(y, y_ref)
    close_scaled(final, final_ref)


# ============================================================================= torch: triton vs the reference
C = TRITON_CHUNK


def _triton_compare(kw, chunk_size=C, **tol):
    softplus = kw.pop("dt_softplus", False)
    ref, fast = ssd_fn("reference", chunk_size), ssd_fn("triton", chunk_size)
    compare_10x_grads(lambda **a: ref(softplus, **a), lambda **a: fast(softplus, **a), kw, **tol)


# groups and options vary with the case so that every length sees G = 1 and 2, with and without D/z/bias/softplus
TRITON_SSD_CASES = [case + extra
                    for case, extra in zip(TRITON_CASES, [(1, False), (2, True), (1, True), (2, False)])]
TRITON_SSD_IDS = [f"{i}-G{c[3]}-{'full' if c[4] else 'plain'}" for i, c in zip(TRITON_CASE_IDS, TRITON_SSD_CASES)]


@needs_triton
@single_thread
@pytest.mark.parametrize("case", TRITON_SSD_CASES, ids=TRITON_SSD_IDS)
@pytest.mark.parametrize("L", TRITON_LENGTHS, ids=[f"L{t}" for t in TRITON_LENGTHS])
def test_torch_triton_matches_reference(L, case):
    B, init, strong, groups, full = case
    _triton_compare(triton_ssd_inputs(B, L, init=init, strong=strong, groups=groups, full=full, seed=L + 10 * B))


@needs_triton
@single_thread
@pytest.mark.parametrize("option", ["D_per_head", "D_per_channel", "z", "dt_bias", "softplus"])
def test_torch_triton_each_option(option):
    kw = triton_ssd_inputs(2, 2 * C + 3, init=True, strong=True, groups=2, full=False, seed=5)
    gen = torch.Generator().manual_seed(6)
    extra = {"D_per_head": lambda: dict(D=torch.randn(2, generator=gen)),
             "D_per_channel": lambda: dict(D=torch.randn(2, 6, generator=gen)),
             "z": lambda: dict(z=torch.randn(kw["x"].shape, generator=gen)),
             "dt_bias": lambda: dict(dt_bias=torch.rand(2, generator=gen)),
             "softplus": lambda: dict(dt_softplus=True)}[option]
    kw.update(extra())
    _triton_compare(kw)


@needs_triton
@single_thread
def test_torch_triton_large_tiles():
    """P and N over 64 (two P blocks, two N blocks in the state kernel); chunk 128 (two row blocks per chunk)."""
    _triton_compare(triton_ssd_inputs(1, C + 1, init=True, strong=False, H=1, P=70, N=70))
    _triton_compare(triton_ssd_inputs(1, 140, init=True, strong=False, H=1, P=3, N=4), chunk_size=128)


@needs_triton
@single_thread
@pytest.mark.parametrize("chunk_size", [1, 24], ids=["C1", "C24"])
def test_torch_triton_other_chunk_sizes(chunk_size):
    """A chunk of one step, and one that is not a power of two (tile 32, masked rows)."""
    length = 5 if chunk_size == 1 else 30
    _triton_compare(triton_ssd_inputs(1, length, init=True, strong=True, H=1), chunk_size=chunk_size)


@needs_triton
@single_thread
def test_torch_triton_empty_and_fp64():
    kw = triton_ssd_inputs(2, 0, init=True, strong=False)
    kw.pop("dt_softplus")
    y, S = ssd_fn("triton", C)(**kw)
    assert y.shape == (2, 0, 2, 6)
    torch.testing.assert_close(S, kw["initial_states"])
    kw = {n: x.double() if torch.is_tensor(x) else x
          for n, x in triton_ssd_inputs(2, 11, init=True, strong=True).items()}
    y, S = ssd_fn("triton", C)(**kw)
    y_r, S_r = ssd_fn("reference", C)(**kw)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, y_r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, S_r, rtol=1e-10, atol=1e-10)


@needs_triton
@single_thread
def test_torch_triton_bf16():
    """bf16 inputs against the fp32 reference on the same (rounded) values: y in bf16, state in fp32; loose grads."""
    kw = triton_ssd_inputs(2, 2 * C + 3, init=True, strong=False, groups=2)
    softplus = kw.pop("dt_softplus")
    kw_bf = {n: x.bfloat16() if n not in ("A", "initial_states") else x for n, x in kw.items()}
    kw_32 = {n: x.float() for n, x in kw_bf.items()}
    (y_r, S_r), g_r = run_and_grad_f32(lambda **a: ssd_fn("reference", C)(softplus, **a), kw_32)
    (y, S), g = run_and_grad_f32(lambda **a: ssd_fn("triton", C)(softplus, **a), kw_bf, device=TRITON_DEVICE)
    assert y.dtype == torch.bfloat16 and S.dtype == torch.float32
    close_scaled(y.float(), y_r, 2e-2, 2e-2, "output")
    close_scaled(S, S_r, 2e-2, 2e-2, "final state")
    for name in g_r:
        close_scaled(g[name].float(), g_r[name], 5e-2, 5e-2, f"grad of {name}")


@needs_triton
@single_thread
def test_torch_auto_picks_triton_on_cuda_only(monkeypatch):
    monkeypatch.delenv("HYBRIDC_KERNEL", raising=False)
    assert OPS["ssd"].pick("auto", "cpu") is OPS["ssd"].get("cpp" if _cpp_library.available() else "chunk")
    assert OPS["ssd"].pick("auto", "cuda") is OPS["ssd"].get("triton")
    monkeypatch.setattr(_triton, "triton_available", lambda: False)
    assert OPS["ssd"].pick("auto", "cuda") is ssd_naive.reference


# ============================================================================= JAX: the reference vs torch's
@pytest.mark.parametrize("d_shape,full", [((4,), True), ((4, 3), True), ((4,), False)],
                         ids=["D-per-head", "D-per-channel", "bare"])
@pytest.mark.parametrize("length", [0, 6], ids=lambda n: f"L{n}")
def test_jax_reference_matches_torch(d_shape, full, length):
    t, j = torch_and_jax(parity_ssd_inputs(length, d_shape, full))
    t_y, t_final = tssd.ssd(**t, chunk_size=4, dt_softplus=full, return_final_states=True)
    j_y, j_final = jssd.ssd(**j, chunk_size=4, dt_softplus=full, return_final_states=True)
    close_parity(j_y, t_y.numpy())
    close_parity(j_final, t_final.numpy())
    assert jssd.ssd(**j, chunk_size=4).shape == j_y.shape


def test_jax_step_matches_torch():
    t, j = torch_and_jax(parity_ssd_inputs(1, (4, 3), True))
    args = lambda d: (d["initial_states"], d["x"][:, 0], d["dt"][:, 0], d["A"], d["B"][:, 0], d["C"][:, 0],  # noqa: E731
                      d["D"], d["z"][:, 0], d["dt_bias"], True)
    for jv, tv in zip(jssd.ssd_step(*args(j)), tssd.ssd_step(*args(t))):
        close_parity(jv, tv.numpy())


# =============================================================================== JAX: fast forms vs the reference
@pytest.mark.parametrize("length,batch,h0,strong", CASES, ids=[case_id(c) for c in CASES])
def test_jax_chunk_matches_reference(length, batch, h0, strong):
    compare_fast("ssd", fast_inputs("ssd", batch, length, h0=h0, strong=strong, seed=length))


# (length, batch, h0, strong, seed): the original case, and one added at T+1 with strong decay and no h0
SCAN_CHUNK_CASES = [(3 * T + 5, 3, True, False, 3), (T + 1, 1, False, True, T + 1)]


@pytest.mark.parametrize("length,batch,h0,strong,seed", SCAN_CHUNK_CASES,
                         ids=[case_id(c[:4]) for c in SCAN_CHUNK_CASES])
def test_jax_scan_chunk_matches_reference(length, batch, h0, strong, seed):
    """impl "scan_chunk" (auto): the reference's values, the chunked form's gradients (custom VJP)."""
    compare_fast("ssd", fast_inputs("ssd", batch, length, h0=h0, strong=strong, seed=seed), impl="scan_chunk")


def test_jax_chunk_matches_torch_fast():
    chunk_matches_torch_fast("ssd", fast_inputs("ssd", 3, 3 * T + 5, h0=True, strong=False, seed=7))


def test_jax_auto_picks_the_fast_form_and_bad_impl_raises():
    """auto on CPU: the C++ kernel (XLA custom call) when it builds, else the lax.scan forward with the chunked
    backward."""
    op = jax_ops.OPS["ssd"]
    auto_and_reference_picks(op, op.get("cpp") if JAX_CPP else jssd_chunk.scan_chunk_ssd, jssd_naive.reference)


def test_jax_chunk_bf16_inputs_keep_their_dtype():
    bf16_inputs_keep_their_dtype("ssd", fast_inputs("ssd", 1, 9, h0=False, strong=False))


def test_jax_long_sequence_stays_finite():
    """16k steps through the auto implementation at the Mamba-2 default chunk (256)."""
    long_sequence_stays_finite("ssd", fast_inputs("ssd", 1, 16384, h0=True, strong=False), 256)

