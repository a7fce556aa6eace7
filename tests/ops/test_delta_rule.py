"""delta_rule (DeltaNet): every implementation of both backends against the sequential reference (``naive``).

torch: the reference against flash-linear-attention's naive forms (``fla.ops.delta_rule.naive``:
``delta_rule_recurrence``, ``delta_rule_chunkwise``) in values and gradients; the chunked WY/UT form (``chunk``),
the fused sequential C++ kernel (``cpp``) and the Triton kernel (``triton``: the gated kernel at g = 0, through
Triton's interpreter on CPU) against the reference in values, final states and the gradient of every input. JAX: the
reference against torch's on the same numbers; ``chunk``, ``scan_chunk`` (lax.scan values, the chunked form's
gradients) and the C++ kernel as an XLA custom call (``cpp``) against the JAX reference, values and ``jax.grad``.
Lengths walk every class of the chunked walk (1, C-1, C, C+1, 2C+3, 3C+5 with a small chunk C = 8; the C++
backward checkpoints every 16).

Dimension glossary: B batch, T time, H heads, K key head dim, V value head dim, C chunk size.
"""
from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridc_jax import ops as jax_ops
from hybridc_jax.ops.delta_rule import chunk as jdr_chunk
from hybridc_jax.ops.delta_rule import cpp as jdr_cpp
from hybridc_jax.ops.delta_rule import naive as jdr_naive
from hybridc_torch.ops import delta_rule, delta_rule_step, gated_delta_rule, gated_delta_rule_step, rwkv7, rwkv7_step
from hybridc_torch.ops.delta_rule import chunk as dr_chunk
from hybridc_torch.ops.delta_rule import naive as dr_naive
from hybridc_torch.ops.gated_delta_rule import chunk as gdr_chunk
from hybridc_torch.ops.gated_delta_rule import naive as gdr_naive
from hybridc_torch.ops.rwkv7 import chunk as rk_chunk
from hybridc_torch.ops.rwkv7 import naive as rk_naive
from ops._inputs import B, H, K, V, delta_inputs, fast_inputs, fla_inputs, triton_gdr_inputs
from ops._jax_checks import (CASES, JAX_CPP, LIGHT_CASES, auto_and_reference_picks, case_id, chunk_matches_torch_fast,
                             compare_fast, cpp_matches_torch_and_runs_under_vmap, delta_matches_torch_reference,
                             delta_step_matches_torch_step_and_edge_cases, long_sequence_stays_finite,
                             needs_jax_cpp)
from ops._torch_checks import (FLA_GRAD_TOL, FLA_TOL, TRITON_CHUNK, compare_10x_grads, delta_auto_on_cpu,
                               delta_auto_picks_triton_on_cuda_only, delta_check, delta_cpp_fp64_empty_and_fallback,
                               delta_dtypes, delta_empty_sequence_and_no_state, delta_long_sequence_stays_finite,
                               delta_triton_bf16, fla_grads, fla_module, fla_run, impl_dispatch, needs_fla,
                               needs_torch_cpp, needs_triton, split_sequences_chain_through_state, triton_gdr_fn)

pytestmark = pytest.mark.usefixtures("single_thread")
fla_dr = fla_module("fla.ops.delta_rule.naive")
# the op packages (entry point, step, reference); `from hybridc_jax.ops import ssd` gives the entry callable itself
jdr, tdr = (importlib.import_module(f"hybridc_{backend}.ops.delta_rule") for backend in ("jax", "torch"))
KERNELS = ("delta_rule", "gated_delta_rule", "rwkv7")


def _tr(x):
    """(B, T, H, ...) <-> (B, H, T, ...)."""
    return x.transpose(1, 2)


# ============================================================================ torch: the reference vs fla's naive
FLA_CASES = [pytest.param(T, init, id=f"B{B}-T{T}-H{H}-{'h0' if init else 'zero'}")
             for T in (1, 7, 33) for init in (False, True)]


@needs_fla
@pytest.mark.parametrize("T,init", FLA_CASES)
def test_torch_reference_matches_fla_recurrence(T, init):
    x = fla_inputs(T)
    h0 = x["h0"] if init else None
    o, S = fla_run("delta_rule", x, h0)
    o_ref, S_ref = fla_dr.delta_rule_recurrence(_tr(x["q"]), _tr(x["k"]), _tr(x["v"]), _tr(x["beta"]),
                                                initial_state=None if h0 is None else h0.clone())
    torch.testing.assert_close(o, _tr(o_ref), **FLA_TOL)
    torch.testing.assert_close(S, S_ref, **FLA_TOL)


@needs_fla
def test_torch_reference_matches_fla_chunkwise():
    x = fla_inputs(32, seed=1)
    o, S = fla_run("delta_rule", x, None)
    o_ref, S_ref = fla_dr.delta_rule_chunkwise(_tr(x["q"]), _tr(x["k"]), _tr(x["v"]), _tr(x["beta"]), chunk_size=8)
    torch.testing.assert_close(o, _tr(o_ref), **FLA_TOL)
    torch.testing.assert_close(S, S_ref, **FLA_TOL)


@needs_fla
def test_torch_grads_match_fla():
    x = fla_inputs(7)
    names = ("q", "k", "v", "beta", "h0")
    ours = fla_grads(lambda t: delta_rule(t["q"], t["k"], t["v"], t["beta"], initial_state=t["h0"],
                                          output_final_state=True), {n: x[n] for n in names})
    ref = fla_grads(lambda t: (lambda o, S: (_tr(o), S))(*fla_dr.delta_rule_recurrence(
        _tr(t["q"]), _tr(t["k"]), _tr(t["v"]), _tr(t["beta"]), initial_state=t["h0"])), {n: x[n] for n in names})
    for n in names:
        torch.testing.assert_close(ours[n], ref[n], **FLA_GRAD_TOL)


# The three tests below check all three delta-family ops (delta_rule, gated_delta_rule, rwkv7) at once; kept here.
def test_torch_steps_equal_reference():
    x = fla_inputs(5, seed=4)
    h = x["h0"]
    _, S_dr = dr_naive.reference(x["q"], x["k"], x["v"], x["beta"], initial_state=h, output_final_state=True)
    o_dr, S_dr1 = delta_rule_step(x["q"][:, 0], x["k"][:, 0], x["v"][:, 0], x["beta"][:, 0], h)
    o_ref, S_ref = dr_naive.reference(x["q"][:, :1], x["k"][:, :1], x["v"][:, :1], x["beta"][:, :1], initial_state=h,
                                      output_final_state=True)
    torch.testing.assert_close(o_dr, o_ref[:, 0], **FLA_TOL)
    torch.testing.assert_close(S_dr1, S_ref, **FLA_TOL)

    o_g, S_g = gated_delta_rule_step(*(x[n][:, 0] for n in ("q", "k", "v", "g", "beta")), h)
    o_ref, S_ref = gdr_naive.reference(*(x[n][:, :1] for n in ("q", "k", "v", "g", "beta")), initial_state=h,
                                       output_final_state=True)
    torch.testing.assert_close(o_g, o_ref[:, 0], **FLA_TOL)
    torch.testing.assert_close(S_g, S_ref, **FLA_TOL)

    o_r, S_r = rwkv7_step(*(x[n][:, 0] for n in ("q", "w", "k", "v", "a", "b")), h, scale=0.7)
    o_ref, S_ref = rk_naive.reference(*(x[n][:, :1] for n in ("q", "w", "k", "v", "a", "b")), scale=0.7,
                                      initial_state=h, output_final_state=True)
    torch.testing.assert_close(o_r, o_ref[:, 0], **FLA_TOL)
    torch.testing.assert_close(S_r, S_ref, **FLA_TOL)


def test_torch_steps_do_not_mutate_state():
    x = fla_inputs(1)
    h = x["h0"].clone()
    delta_rule_step(x["q"][:, 0], x["k"][:, 0], x["v"][:, 0], x["beta"][:, 0], h)
    gated_delta_rule_step(*(x[n][:, 0] for n in ("q", "k", "v", "g", "beta")), h)
    rwkv7_step(*(x[n][:, 0] for n in ("q", "w", "k", "v", "a", "b")), h)
    assert torch.equal(h, x["h0"])


def test_torch_final_state_none_unless_requested_and_defaults():
    x = fla_inputs(4)
    o, S = delta_rule(x["q"], x["k"], x["v"], x["beta"])
    assert S is None and o.shape == (B, 4, H, V) and o.dtype == torch.float32
    o2, _ = delta_rule(x["q"], x["k"], x["v"], x["beta"], scale=K ** -0.5)
    torch.testing.assert_close(o, o2, atol=0, rtol=0)
    o, S = gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"])
    assert S is None and o.shape == (B, 4, H, V)
    o, S = rwkv7(x["q"], x["w"], x["k"], x["v"], x["a"], x["b"])
    o_1, _ = rwkv7(x["q"], x["w"], x["k"], x["v"], x["a"], x["b"], scale=1.0)
    assert S is None and torch.equal(o, o_1)


@pytest.mark.parametrize("T1", [0, 3, 9], ids=lambda t: f"split{t}")
def test_torch_split_sequences_chain_through_state(T1):
    split_sequences_chain_through_state("delta_rule", T1)


def test_torch_impl_dispatch():
    impl_dispatch("delta_rule", dr_naive)


# ======================================================================== torch: chunk and cpp vs the reference
CHUNK = 8
LENGTHS = [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 3, 3 * CHUNK + 5]


@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
@pytest.mark.parametrize("init", [False, True], ids=["zero", "h0"])
@pytest.mark.parametrize("Bsz", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"T{t}")
def test_torch_chunk_matches_reference(T, Bsz, init, strong):
    args, h0 = delta_inputs("delta_rule", Bsz, T, strong=strong, init=init, seed=T + 10 * Bsz)
    delta_check("delta_rule", args, h0, CHUNK)


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 64], ids=lambda c: f"C{c}")
def test_torch_chunk_other_chunk_sizes(chunk_size):
    args, h0 = delta_inputs("delta_rule", 2, 37, strong=False)
    delta_check("delta_rule", args, h0, chunk_size)


def test_torch_chunk_default_chunk_sizes():
    """All three delta-family ops' default chunks (one test, kept here)."""
    assert gdr_chunk.chunk_gated_delta_rule.__defaults__[-1] == 64
    assert dr_chunk.chunk_delta_rule.__defaults__[-1] == 64
    assert rk_chunk.chunk_rwkv7.__defaults__[-1] == 16
    for kernel in KERNELS:                       # default chunk size, T spanning several chunks with a ragged tail
        args, h0 = delta_inputs(kernel, 1, 150, strong=False)
        delta_check(kernel, args, h0, None)


def test_torch_auto_on_cpu(monkeypatch):
    delta_auto_on_cpu("delta_rule", dr_naive, monkeypatch)


def test_torch_chunk_empty_sequence_and_no_state():
    delta_empty_sequence_and_no_state("delta_rule")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "fp64"])
def test_torch_chunk_dtypes(dtype):
    delta_dtypes("delta_rule", dtype)


@settings(max_examples=12, deadline=None)
@given(kernel=st.sampled_from(KERNELS), Bsz=st.integers(1, 2), T=st.integers(1, 40), h=st.integers(1, 2),
       k_dim=st.integers(1, 9), v_dim=st.integers(1, 9), chunk=st.sampled_from([2, 5, 8, 16]),
       strong=st.booleans(), init=st.booleans(), seed=st.integers(0, 2**16))
def test_torch_chunk_property(kernel, Bsz, T, h, k_dim, v_dim, chunk, strong, init, seed):
    """Draws the op too (all three delta-family ops: kept here as one property so the examples stay few)."""
    args, h0 = delta_inputs(kernel, Bsz, T, strong=strong, seed=seed, h=h, k_dim=k_dim, v_dim=v_dim, init=init)
    delta_check(kernel, args, h0, chunk)


def test_torch_long_sequence_stays_finite():
    delta_long_sequence_stays_finite("delta_rule")


CPP_CASES = [(1, False, False), (3, True, True), (3, True, False), (1, False, True)]  # (B, init, strong)


@needs_torch_cpp
@pytest.mark.parametrize("Bsz,init,strong", CPP_CASES,
                         ids=[f"B{b}-{'h0' if i else 'zero'}-{'strong' if s else 'weak'}" for b, i, s in CPP_CASES])
@pytest.mark.parametrize("T", [1, 15, 16, 17, 53], ids=lambda t: f"T{t}")  # around the backward's checkpoints (16)
def test_torch_cpp_matches_reference(T, Bsz, init, strong):
    args, h0 = delta_inputs("delta_rule", Bsz, T, strong=strong, init=init, seed=T + 10 * Bsz)
    delta_check("delta_rule", args, h0, None, impl="cpp")


@needs_torch_cpp
def test_torch_cpp_fp64_empty_and_fallback(monkeypatch):
    delta_cpp_fp64_empty_and_fallback("delta_rule", monkeypatch)


@needs_torch_cpp
@settings(max_examples=10, deadline=None)
@given(kernel=st.sampled_from(("delta_rule", "gated_delta_rule")), Bsz=st.integers(1, 2), T=st.integers(1, 40),
       h=st.integers(1, 2), k_dim=st.integers(1, 9), v_dim=st.integers(1, 9), strong=st.booleans(),
       init=st.booleans(), seed=st.integers(0, 2**16))
def test_torch_cpp_property(kernel, Bsz, T, h, k_dim, v_dim, strong, init, seed):
    """Draws the op too (delta_rule and gated_delta_rule: kept here as one property so the examples stay few)."""
    args, h0 = delta_inputs(kernel, Bsz, T, strong=strong, seed=seed, h=h, k_dim=k_dim, v_dim=v_dim, init=init)
    delta_check(kernel, args, h0, None, impl="cpp")


# ============================================================================= torch: triton vs the reference
C = TRITON_CHUNK


@needs_triton
@pytest.mark.parametrize("T,B,init,strong", [(C + 1, 1, False, False), (3 * C + 5, 3, True, True)],
                         ids=["T9-B1-zero-weak", "T29-B3-init-strong"])
def test_torch_triton_matches_reference(T, B, init, strong):
    kw = triton_gdr_inputs(B, T, init=init, strong=strong, seed=T, gated=False)
    compare_10x_grads(triton_gdr_fn("reference", gated=False), triton_gdr_fn("triton", gated=False), kw)


@needs_triton
def test_torch_triton_bf16():
    delta_triton_bf16(gated=False)


@needs_triton
def test_torch_auto_picks_triton_on_cuda_only(monkeypatch):
    delta_auto_picks_triton_on_cuda_only("delta_rule", monkeypatch)


# ============================================================================= JAX: the reference vs torch's
PARITY = (tdr, jdr, "delta_rule", ("q", "k", "v", "beta"), {})   # torch module, jax module, entry, arguments, kwargs


@pytest.mark.parametrize("T,init", [(1, True), (7, False), (7, True)], ids=["T1-h0", "T7-zero", "T7-h0"])
def test_jax_reference_matches_torch(T, init):
    delta_matches_torch_reference(*PARITY, T, init)


def test_jax_step_matches_torch_step_and_edge_cases():
    delta_step_matches_torch_step_and_edge_cases(*PARITY)


# =============================================================================== JAX: fast forms vs the reference
T_JAX = 8
# (length, batch, h0, strong, seed): the original case, and one added at T+1 with strong decay and no h0
SCAN_CHUNK_CASES = [(3 * T_JAX + 5, 3, True, False, 3), (T_JAX + 1, 1, False, True, T_JAX + 1)]


@pytest.mark.parametrize("length,batch,h0,strong", LIGHT_CASES, ids=[case_id(c) for c in LIGHT_CASES])
def test_jax_chunk_matches_reference(length, batch, h0, strong):
    compare_fast("delta_rule", fast_inputs("delta_rule", batch, length, h0=h0, strong=strong, seed=length))


@pytest.mark.parametrize("length,batch,h0,strong,seed", SCAN_CHUNK_CASES,
                         ids=[case_id(c[:4]) for c in SCAN_CHUNK_CASES])
def test_jax_scan_chunk_matches_reference(length, batch, h0, strong, seed):
    """impl "scan_chunk": the reference's values, the chunked form's gradients (custom VJP)."""
    compare_fast("delta_rule", fast_inputs("delta_rule", batch, length, h0=h0, strong=strong, seed=seed),
                 impl="scan_chunk")


@needs_jax_cpp
@pytest.mark.parametrize("length,batch,h0,strong", CASES, ids=[case_id(c) for c in CASES])
def test_jax_cpp_matches_reference(length, batch, h0, strong):
    """The C++ kernel as an XLA custom call (checkpointing every 16) == the lax.scan reference, values and the
    gradient of every input."""
    kw = fast_inputs("delta_rule", batch, length, h0=h0, strong=strong, seed=length)
    compare_fast("delta_rule", kw, impl="cpp")


@needs_jax_cpp
def test_jax_cpp_matches_torch_and_runs_under_vmap():
    """Same machine code as torch's impl="cpp": equal to rounding; vmap loops over the mapped axis."""
    cpp_matches_torch_and_runs_under_vmap("delta_rule", fast_inputs("delta_rule", 3, 3 * T_JAX + 5, h0=True,
                                                                    strong=False, seed=11))


def test_jax_chunk_matches_torch_fast():
    chunk_matches_torch_fast("delta_rule", fast_inputs("delta_rule", 3, 3 * T_JAX + 5, h0=True, strong=False,
                                                       seed=7))


def test_jax_auto_picks_the_fast_form_and_bad_impl_raises():
    """auto: the C++ kernel as an XLA custom call (measured fastest on CPU), else scan_chunk."""
    auto = jdr_cpp.delta_rule_cpp if JAX_CPP else jdr_chunk.scan_chunk_delta_rule
    auto_and_reference_picks(jax_ops.OPS["delta_rule"], auto, jdr_naive.reference)


def test_jax_long_sequence_stays_finite():
    """16k steps through the auto implementation at its default chunk size."""
    long_sequence_stays_finite("delta_rule", fast_inputs("delta_rule", 1, 16384, h0=True, strong=False), None)
