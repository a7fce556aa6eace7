"""linear_recurrence (Griffin's RG-LRU scan, h_t = a_t h_{t-1} + x_t): every implementation of both backends against
the sequential reference (``naive``).

torch: the reference against a cumulative-product closed form (float64); the chunked torch scan (``chunk``), the C++
scan (``cpp``) and the Triton kernels (``triton``, through Triton's interpreter on CPU) against the reference in
values and the gradients of every input, decays with exact zeros (document resets) included. JAX: the reference
against torch's on the same numbers; the two-level chunked form (``chunk``), the C++ kernel as an XLA custom call
(``cpp``) and the Pallas kernels (``pallas``, interpreted on CPU) against the JAX reference, values and ``jax.grad``.
Lengths walk every class of the chunked walk (1, T-1, T, T+1, 2T+3, 3T+5, T^2+3 with T = 8).

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels (width)
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridc_jax import ops as jax_ops
from hybridc_jax.ops.linear_recurrence import cpp as jlr_cpp
from hybridc_jax.ops.linear_recurrence import naive as jlr_naive
from hybridc_torch.ops import OPS, _cpp_library, linear_recurrence, linear_recurrence_step
from hybridc_torch.ops.linear_recurrence import chunk as lr_chunk
from hybridc_torch.ops.linear_recurrence import cpp as lr_cpp
from hybridc_torch.ops.linear_recurrence import naive as lr_naive
from ops._inputs import (PALLAS_BLOCK, PALLAS_LR_CASES, PARITY_BATCH, fast_inputs, pallas_lr_inputs, rand,
                         torch_and_jax)
from ops._jax_checks import (CASES, JAX_CPP, LIGHT_CASES, auto_and_reference_picks, case_id, chunk_matches_torch_fast,
                             close_pallas, close_parity, compare_fast, cpp_matches_torch_and_runs_under_vmap,
                             long_sequence_stays_finite, needs_jax_cpp, needs_pallas, pallas_module)
from ops._torch_checks import (TORCH_CPP, TRITON_DEVICE, close_scaled, compare, decay_matrix, needs_torch_cpp,
                               needs_triton, run_and_grad, triton_module)

# the op packages (entry point, step, reference); `from hybridc_jax.ops import ssd` gives the entry callable itself
jlr, tlr = (importlib.import_module(f"hybridc_{backend}.ops.linear_recurrence") for backend in ("jax", "torch"))
tlr_triton = triton_module("linear_recurrence")
plr = pallas_module("linear_recurrence")

T = 8  # the chunk in these tests
F32, F64 = torch.float32, torch.float64


# ============================================================================ torch: the reference's oracles
@pytest.mark.parametrize("length", [1, 7, 33], ids=lambda n: f"L{n}")
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero-h0", "h0"])
def test_torch_reference_matches_cumprod_closed_form(length, with_h0):
    g = torch.Generator().manual_seed(length)
    a = torch.rand(2, length, 6, generator=g, dtype=F64) * 0.9 + 0.05  # (B, L, D)
    x = torch.randn(2, length, 6, generator=g, dtype=F64)
    h0 = torch.randn(2, 6, generator=g, dtype=F64) if with_h0 else torch.zeros(2, 6, dtype=F64)
    h, h_last = linear_recurrence(a, x, h0 if with_h0 else None)
    M = decay_matrix(torch.log(a).transpose(1, 2))  # (B, D, L, L)
    ref = torch.einsum("bdts,bsd->btd", M, x) + torch.cumprod(a, dim=1) * h0[:, None]
    torch.testing.assert_close(h, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h_last, ref[:, -1], rtol=1e-10, atol=1e-10)


def test_torch_reference_dtypes_and_step():
    a = torch.rand(2, 5, 3, dtype=torch.bfloat16)
    x = torch.randn(2, 5, 3, dtype=torch.bfloat16)
    h, h_last = linear_recurrence(a, x)
    assert h.dtype == torch.bfloat16 and h_last.dtype == torch.float32
    h0 = torch.randn(2, 3)
    h1, last1 = linear_recurrence(a[:, :1].float(), x[:, :1].float(), h0)
    h0_copy = h0.clone()
    torch.testing.assert_close(linear_recurrence_step(h0, a[:, 0].float(), x[:, 0].float()), last1,
                               rtol=0, atol=0)
    assert torch.equal(h0, h0_copy) and torch.equal(h1[:, 0], last1)


def test_torch_impl_registry_and_unknown_impl():
    op = OPS["linear_recurrence"]
    assert "reference" in op.impls and len(op.impls) >= 2  # the reference plus a fast CPU kernel
    assert op.pick("reference") is lr_naive.reference
    assert op.pick("auto", device="cuda") is op.get("triton")  # the Triton kernels (triton is installed)
    with pytest.raises(ValueError, match="auto.*reference"):
        op.pick("triton-nope")


# ======================================================================== torch: chunk and cpp vs the reference
LENGTHS = [1, T - 1, T, T + 1, 2 * T + 3, 3 * T + 5, T * T + 3]
IMPLS = ["chunk", pytest.param("cpp", marks=needs_torch_cpp)]


def _inputs(batch, length, width, *, strong=False, h0=False, dtype=F32, seed=0, resets=False):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, length, width, generator=g, dtype=dtype)
    a = a * 0.3 if strong else 0.9 + 0.1 * a
    if resets:  # exact zeros, as the RG-LRU's document resets produce
        a = a * (torch.rand(batch, length, width, generator=g) > 0.2).to(dtype)
    return dict(a=a, x=torch.randn(batch, length, width, generator=g, dtype=dtype),
                initial_state=torch.randn(batch, width, generator=g, dtype=dtype) if h0 else None)


def _entry(impl, chunk_size=T):
    def fn(**kw):
        if impl == "chunk":
            return linear_recurrence(**kw, impl=impl, chunk_size=chunk_size)
        return linear_recurrence(**kw, impl=impl)
    return fn


@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
@pytest.mark.parametrize("h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("impl", IMPLS)
def test_torch_fast_matches_reference(impl, length, batch, h0, strong):
    kw = _inputs(batch, length, 5 if impl == "chunk" else 70, strong=strong, h0=h0, seed=length, resets=strong)
    compare(_entry("reference"), _entry(impl), kw, 2)


@pytest.mark.parametrize("impl", IMPLS)
def test_torch_fast_dtypes(impl):
    for dtype in (torch.float64, torch.bfloat16):
        kw = _inputs(2, 19, 3, h0=True, dtype=dtype)
        h, last = _entry(impl, 4)(**kw)
        h_ref, last_ref = linear_recurrence(**kw, impl="reference")
        assert h.dtype == dtype and last.dtype == last_ref.dtype
        tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(h, h_ref, **tol)
        torch.testing.assert_close(last, last_ref, **tol)


@needs_torch_cpp
def test_torch_cpp_is_bitwise_the_reference():
    """No FMA contraction in the C++ scan: same roundings as the loop (and the decode step)."""
    kw = _inputs(3, 200, 70, h0=True, resets=True)
    for got, want in zip(linear_recurrence(**kw, impl="cpp"), linear_recurrence(**kw, impl="reference")):
        assert torch.equal(got, want)


def test_torch_chunk_sizes_and_auto():
    kw = _inputs(2, 100, 3, h0=True)
    base = linear_recurrence(**kw, impl="reference")
    for c in (1, 2, 5, 100, 1000, None):
        out = linear_recurrence(**kw, impl="chunk", chunk_size=c)
        close_scaled(out[0], base[0])
        close_scaled(out[1], base[1])
    auto = lr_cpp.linear_recurrence_cpp if _cpp_library.available() else lr_chunk.chunk_linear_recurrence
    assert OPS["linear_recurrence"].pick("auto", "cpu") is auto
    assert OPS["linear_recurrence"].pick("reference") is lr_naive.reference


@pytest.mark.parametrize("impl", IMPLS)
def test_torch_fast_empty_sequence(impl):
    a, x, h0 = torch.rand(2, 0, 3), torch.rand(2, 0, 3), torch.rand(2, 3)
    h, last = linear_recurrence(a, x, h0, impl=impl)
    assert h.shape == (2, 0, 3)
    torch.testing.assert_close(last, h0)


@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 2), length=st.integers(1, 40), width=st.integers(1, 70), chunk=st.integers(1, 9),
       h0=st.booleans(), strong=st.booleans(), seed=st.integers(0, 2**16))
def test_torch_fast_property(batch, length, width, chunk, h0, strong, seed):
    kw = _inputs(batch, length, width, strong=strong, h0=h0, seed=seed, resets=strong)
    compare(_entry("reference"), _entry("chunk", chunk), kw, 2)
    if TORCH_CPP:
        compare(_entry("reference"), _entry("cpp"), kw, 2)


@pytest.mark.parametrize("impl", IMPLS)
def test_torch_fast_long_sequence_finite(impl):
    kw = _inputs(1, 16384, 2, h0=True)
    kw["a"] = torch.full_like(kw["a"], 0.999)
    h, last = linear_recurrence(**kw, impl=impl)
    h_ref, last_ref = linear_recurrence(**kw, impl="reference")
    assert torch.isfinite(h).all() and torch.isfinite(last).all()
    close_scaled(h, h_ref)
    close_scaled(last, last_ref)


# ============================================================================= torch: triton vs the reference
TRITON_LENGTHS = [1, T - 1, T, T + 1, 3 * T + 5]


def _triton_inputs(batch, length, width, *, strong=False, h0=False, seed=0, dtype=F32):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, length, width, generator=g)
    a = a * 0.3 if strong else 0.9 + 0.1 * a
    if strong:  # exact zeros, as the RG-LRU's document resets produce
        a = a * (torch.rand(batch, length, width, generator=g) > 0.2).float()
    kw = dict(a=a, x=torch.randn(batch, length, width, generator=g),
              initial_state=torch.randn(batch, width, generator=g) if h0 else None)
    return {k: (None if v is None else v.to(TRITON_DEVICE, dtype)) for k, v in kw.items()}


def _triton(block_d=4):
    def fn(**kw):
        return tlr_triton.triton_linear_recurrence(**kw, chunk_size=T, block_d=block_d)
    return fn


@needs_triton
@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong-resets"])
@pytest.mark.parametrize("h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("length", TRITON_LENGTHS, ids=lambda n: f"L{n}")
def test_torch_triton_matches_reference(length, batch, h0, strong):
    kw = _triton_inputs(batch, length, 3, strong=strong, h0=h0, seed=length)  # D = 3: a ragged second block
    compare(lr_naive.reference, _triton(block_d=2), kw)


@needs_triton
def test_torch_triton_entry_point_and_dispatch():
    """impl="triton" through the entry point; auto per device, asserted with the selective scan's (the two ops
    share their device rules)."""
    kw = _triton_inputs(2, 3, 5, h0=True, seed=1)  # default blocks (chunk 32, channels capped at 8)

    def entry(impl):
        def fn(**k):
            return linear_recurrence(**k, impl=impl)
        return fn
    compare(entry("reference"), entry("triton"), kw)
    lr_op, ss_op = OPS["linear_recurrence"], OPS["selective_scan"]
    assert lr_op.auto("cuda") == ss_op.auto("cuda") == "triton"  # triton imports here
    assert lr_op.auto("cpu") in ("cpp", "chunk") and ss_op.auto("cpu") in ("cpp", "reference")
    assert lr_op.auto("meta") == ss_op.auto("meta") == "reference"


@needs_triton
def test_torch_triton_bf16_inputs():
    kw = _triton_inputs(2, 2 * T + 1, 5, h0=True, seed=2, dtype=torch.bfloat16)
    up = {k: v.float() for k, v in kw.items()}
    h, last = _triton()(**kw)
    ref, ref_last = lr_naive.reference(**up)
    assert h.dtype == torch.bfloat16 and last.dtype == F32
    torch.testing.assert_close(h.float(), ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(last, ref_last, rtol=1e-4, atol=1e-4)  # fp32 state from the same bf16 inputs
    (_, grads), (_, ref_grads) = run_and_grad(_triton(), kw), run_and_grad(lr_naive.reference, up)
    for k, r in ref_grads.items():
        assert grads[k].dtype == torch.bfloat16, k
        torch.testing.assert_close(grads[k].float(), r, rtol=2e-2, atol=2e-2)


@needs_triton
def test_torch_triton_edge_cases(monkeypatch):
    kw = _triton_inputs(2, 0, 3, h0=True)
    h, last = tlr_triton.triton_linear_recurrence(**kw)
    assert h.shape == (2, 0, 3)
    torch.testing.assert_close(last, kw["initial_state"])
    kw = _triton_inputs(1, 4, 3)
    with pytest.raises(ValueError, match="power of two"):
        tlr_triton.triton_linear_recurrence(**kw, block_d=3)
    with torch.no_grad():  # no grad: no fp32 copy of h, same values
        close_scaled(tlr_triton.triton_linear_recurrence(**kw)[0], lr_naive.reference(**kw)[0])
    monkeypatch.setattr(tlr_triton, "_INTERPRET", False)
    if TRITON_DEVICE == "cpu":
        with pytest.raises(RuntimeError, match="CUDA tensors"):
            tlr_triton.triton_linear_recurrence(**kw)


# ============================================================================= JAX: the reference vs torch's
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("length", [0, 6], ids=lambda n: f"L{n}")
def test_jax_reference_matches_torch(length, with_h0):
    a = 1 / (1 + np.exp(-rand(PARITY_BATCH, length, 8, seed=1)))
    t, j = torch_and_jax(dict(a=a, x=rand(PARITY_BATCH, length, 8, seed=2),
                              initial_state=rand(PARITY_BATCH, 8, seed=3) if with_h0 else None))
    for jv, tv in zip(jlr.linear_recurrence(**j), tlr.linear_recurrence(**t)):
        close_parity(jv, tv.numpy())
    h = j["initial_state"] if with_h0 else jnp.zeros((PARITY_BATCH, 8))
    for s in range(length):
        h = jlr.linear_recurrence_step(h, j["a"][:, s], j["x"][:, s])
    close_parity(h, tlr.linear_recurrence(**t)[1].numpy())


# ======================================================================== JAX: chunk and cpp vs the reference
@pytest.mark.parametrize("length,batch,h0,strong", LIGHT_CASES, ids=[case_id(c) for c in LIGHT_CASES])
def test_jax_chunk_matches_reference(length, batch, h0, strong):
    compare_fast("linear_recurrence", fast_inputs("linear_recurrence", batch, length, h0=h0, strong=strong,
                                                  seed=length))


@needs_jax_cpp
@pytest.mark.parametrize("length,batch,h0,strong", CASES, ids=[case_id(c) for c in CASES])
def test_jax_cpp_matches_reference(length, batch, h0, strong):
    """The C++ kernel as an XLA custom call == the lax.scan reference, values and the gradient of every input."""
    kw = fast_inputs("linear_recurrence", batch, length, h0=h0, strong=strong, seed=length)
    compare_fast("linear_recurrence", kw, impl="cpp")


@needs_jax_cpp
def test_jax_cpp_matches_torch_and_runs_under_vmap():
    """Same machine code as torch's impl="cpp": equal to rounding; vmap loops over the mapped axis."""
    cpp_matches_torch_and_runs_under_vmap("linear_recurrence", fast_inputs("linear_recurrence", 3, 3 * T + 5,
                                                                           h0=True, strong=False, seed=11))


def test_jax_chunk_matches_torch_fast():
    chunk_matches_torch_fast("linear_recurrence", fast_inputs("linear_recurrence", 3, 3 * T + 5, h0=True,
                                                              strong=False, seed=7))


def test_jax_auto_picks_the_fast_form_and_bad_impl_raises():
    """auto: the C++ kernel as an XLA custom call (measured fastest on CPU), else the lax.scan reference."""
    auto = jlr_cpp.linear_recurrence_cpp if JAX_CPP else jlr_naive.reference
    auto_and_reference_picks(jax_ops.OPS["linear_recurrence"], auto, jlr_naive.reference)


def test_jax_long_sequence_stays_finite():
    """16k steps through the auto implementation at its default chunk size."""
    long_sequence_stays_finite("linear_recurrence", fast_inputs("linear_recurrence", 1, 16384, h0=True,
                                                                strong=False), None)


# ------------------------------------------------------------------------------------------- pallas
def _pallas_value_and_grads(fn, inputs: dict, seed=1):
    present = {k: v for k, v in inputs.items() if v is not None}
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.standard_normal(inputs["x"].shape), jnp.float32)
    w2 = jnp.asarray(rng.standard_normal(inputs["x"].shape[::2]), jnp.float32)

    def loss(p):
        h, last = fn(**{**inputs, **p})
        return jnp.sum(h.astype(jnp.float32) * w) + jnp.sum(last * w2), (h, last)

    (_, (h, last)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(present)
    return h, last, grads


def _pallas(**kw):
    return plr.pallas_linear_recurrence(**kw, block_d=PALLAS_BLOCK)


@needs_pallas
@pytest.mark.parametrize("case", PALLAS_LR_CASES.values(), ids=PALLAS_LR_CASES.keys())
def test_jax_pallas_matches_reference(case):
    inputs = pallas_lr_inputs(case)
    h, last, grads = _pallas_value_and_grads(_pallas, inputs)
    ref_h, ref_last, ref_grads = _pallas_value_and_grads(jlr.reference, inputs)
    close_pallas(h, ref_h, 1e-4, "h")
    close_pallas(last, ref_last, 1e-4, "h_last")
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        close_pallas(grads[name], ref_grads[name], 1e-4, f"d {name}")


@needs_pallas
def test_jax_pallas_bf16_inputs_vs_fp32_reference():
    inputs = pallas_lr_inputs(PALLAS_LR_CASES["L29-B1-D12-h0-weak"], jnp.bfloat16)
    h, last, grads = _pallas_value_and_grads(_pallas, inputs)
    ref_h, ref_last, ref_grads = _pallas_value_and_grads(
        jlr.reference, {k: None if v is None else v.astype(jnp.float32) for k, v in inputs.items()})
    assert h.dtype == jnp.bfloat16 and last.dtype == jnp.float32
    close_pallas(h, ref_h, 2e-2, "h")
    close_pallas(last, ref_last, 1e-2, "h_last")
    for name in grads:
        assert grads[name].dtype == jnp.bfloat16, name
        close_pallas(grads[name], ref_grads[name], 3e-2, f"d {name}")


@needs_pallas
def test_jax_pallas_through_entry_point_eager():
    if "pallas" not in jax_ops.OPS["linear_recurrence"].impls:
        pytest.skip("the linear_recurrence Op has no 'pallas' entry yet (wired by the lead)")
    inputs = pallas_lr_inputs(PALLAS_LR_CASES["L9-B3-D16-h0-mixed"])
    h, last = jlr.linear_recurrence(**inputs, impl="pallas")
    ref_h, ref_last = jlr.reference(**inputs)
    close_pallas(h, ref_h, 1e-4, "h")
    close_pallas(last, ref_last, 1e-4, "h_last")
