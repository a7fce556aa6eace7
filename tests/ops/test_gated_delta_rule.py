"""gated_delta_rule (Gated DeltaNet): every implementation of both backends against the sequential reference.

torch: the reference against flash-linear-attention's naive forms (``fla.ops.gated_delta_rule.naive``:
``naive_recurrent_gated_delta_rule``, ``naive_chunk_gated_delta_rule``) in values and gradients; the chunked WY/UT
form (``chunk``), the fused sequential C++ kernel (``cpp``) and the Triton kernel (``triton``, through Triton's
interpreter on CPU, chunk 8 / tile 16) against the reference in values, final states and the gradient of every input.
JAX: the reference against torch's on the same numbers; ``chunk``, ``scan_chunk`` (lax.scan values, the chunked
form's gradients) and the C++ kernel as an XLA custom call (``cpp``) against the JAX reference, values and
``jax.grad``. Lengths walk every class of the chunked walk (1, C-1, C, C+1, 2C+3, 3C+5 with a small chunk C = 8).

Dimension glossary: B batch, T time, H heads, K key head dim, V value head dim, C chunk size.
"""
from __future__ import annotations

import importlib

import pytest
import torch

from hybridc_jax import ops as jax_ops
from hybridc_jax.ops.gated_delta_rule import chunk as jgdr_chunk
from hybridc_jax.ops.gated_delta_rule import cpp as jgdr_cpp
from hybridc_jax.ops.gated_delta_rule import naive as jgdr_naive
from hybridc_torch.ops import gated_delta_rule
from hybridc_torch.ops.gated_delta_rule import naive as gdr_naive
from ops._inputs import B, H, delta_inputs, fast_inputs, fla_inputs, triton_gdr_inputs, triton_ssd_inputs
from ops._jax_checks import (CASES, JAX_CPP, auto_and_reference_picks, bf16_inputs_keep_their_dtype, case_id,
                             chunk_matches_torch_fast, compare_fast, cpp_matches_torch_and_runs_under_vmap,
                             delta_matches_torch_reference, delta_step_matches_torch_step_and_edge_cases,
                             long_sequence_stays_finite, needs_jax_cpp)
from ops._torch_checks import (FLA_GRAD_TOL, FLA_TOL, TRITON_CASE_IDS, TRITON_CASES, TRITON_CHUNK, TRITON_DEVICE,
                               TRITON_LENGTHS, compare_10x_grads, delta_auto_on_cpu,
                               delta_auto_picks_triton_on_cuda_only,
                               delta_check, delta_cpp_fp64_empty_and_fallback, delta_dtypes,
                               delta_empty_sequence_and_no_state, delta_long_sequence_stays_finite,
                               delta_triton_bf16, fla_grads, fla_module, fla_run, impl_dispatch, needs_fla,
                               needs_torch_cpp, needs_triton, split_sequences_chain_through_state, ssd_fn,
                               triton_gdr_fn, triton_module)

pytestmark = pytest.mark.usefixtures("single_thread")
fla_gdr = fla_module("fla.ops.gated_delta_rule.naive")
# the op packages (entry point, step, reference); `from hybridc_jax.ops import ssd` gives the entry callable itself
jgdr, tgdr = (importlib.import_module(f"hybridc_{backend}.ops.gated_delta_rule") for backend in ("jax", "torch"))
tgdr_triton = triton_module("gated_delta_rule")


# ============================================================================ torch: the reference vs fla's naive
FLA_CASES = [pytest.param(T, init, id=f"B{B}-T{T}-H{H}-{'h0' if init else 'zero'}")
             for T in (1, 7, 33) for init in (False, True)]


@needs_fla
@pytest.mark.parametrize("T,init", FLA_CASES)
def test_torch_reference_matches_fla_recurrence(T, init):
    x = fla_inputs(T)
    h0 = x["h0"] if init else None
    o, S = fla_run("gated_delta_rule", x, h0)
    o_ref, S_ref = fla_gdr.naive_recurrent_gated_delta_rule(x["q"], x["k"], x["v"], x["beta"], x["g"],
                                                            initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, o_ref, **FLA_TOL)
    torch.testing.assert_close(S, S_ref, **FLA_TOL)


@needs_fla
@pytest.mark.parametrize("T", [7, 33], ids=lambda T: f"T{T}-h0")
def test_torch_reference_matches_fla_chunk(T):
    x = fla_inputs(T, seed=2)
    o, S = fla_run("gated_delta_rule", x, x["h0"])
    o_ref, S_ref = fla_gdr.naive_chunk_gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"], chunk_size=16,
                                                        initial_state=x["h0"], output_final_state=True)
    torch.testing.assert_close(o, o_ref, **FLA_TOL)
    torch.testing.assert_close(S, S_ref, **FLA_TOL)


@needs_fla
def test_torch_grads_match_fla():
    x = fla_inputs(7)
    names = ("q", "k", "v", "g", "beta", "h0")
    ours = fla_grads(lambda t: gated_delta_rule(t["q"], t["k"], t["v"], t["g"], t["beta"], initial_state=t["h0"],
                                                output_final_state=True), {n: x[n] for n in names})
    ref = fla_grads(lambda t: fla_gdr.naive_recurrent_gated_delta_rule(
        t["q"], t["k"], t["v"], t["beta"], t["g"], initial_state=t["h0"], output_final_state=True),
        {n: x[n] for n in names})
    for n in names:
        torch.testing.assert_close(ours[n], ref[n], **FLA_GRAD_TOL)


def test_torch_state_is_fp32_for_low_precision_inputs():
    x = {n: t.to(torch.bfloat16) for n, t in fla_inputs(3).items()}
    o, S = fla_run("gated_delta_rule", x, None)
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32


@pytest.mark.parametrize("T1", [0, 3, 9], ids=lambda t: f"split{t}")
def test_torch_split_sequences_chain_through_state(T1):
    split_sequences_chain_through_state("gated_delta_rule", T1)


def test_torch_impl_dispatch():
    impl_dispatch("gated_delta_rule", gdr_naive)


# ======================================================================== torch: chunk and cpp vs the reference
CHUNK = 8
LENGTHS = [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 3, 3 * CHUNK + 5]


@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
@pytest.mark.parametrize("init", [False, True], ids=["zero", "h0"])
@pytest.mark.parametrize("Bsz", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"T{t}")
def test_torch_chunk_matches_reference(T, Bsz, init, strong):
    args, h0 = delta_inputs("gated_delta_rule", Bsz, T, strong=strong, init=init, seed=T + 10 * Bsz)
    delta_check("gated_delta_rule", args, h0, CHUNK)


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 64], ids=lambda c: f"C{c}")
def test_torch_chunk_other_chunk_sizes(chunk_size):
    args, h0 = delta_inputs("gated_delta_rule", 2, 37, strong=False)
    delta_check("gated_delta_rule", args, h0, chunk_size)


def test_torch_auto_on_cpu(monkeypatch):
    delta_auto_on_cpu("gated_delta_rule", gdr_naive, monkeypatch)


def test_torch_chunk_empty_sequence_and_no_state():
    delta_empty_sequence_and_no_state("gated_delta_rule")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "fp64"])
def test_torch_chunk_dtypes(dtype):
    delta_dtypes("gated_delta_rule", dtype)


def test_torch_long_sequence_stays_finite():
    delta_long_sequence_stays_finite("gated_delta_rule")


CPP_CASES = [(1, False, False), (3, True, True), (3, True, False), (1, False, True)]  # (B, init, strong)


@needs_torch_cpp
@pytest.mark.parametrize("Bsz,init,strong", CPP_CASES,
                         ids=[f"B{b}-{'h0' if i else 'zero'}-{'strong' if s else 'weak'}" for b, i, s in CPP_CASES])
@pytest.mark.parametrize("T", [1, 15, 16, 17, 53], ids=lambda t: f"T{t}")  # around the backward's checkpoints (16)
def test_torch_cpp_matches_reference(T, Bsz, init, strong):
    args, h0 = delta_inputs("gated_delta_rule", Bsz, T, strong=strong, init=init, seed=T + 10 * Bsz)
    delta_check("gated_delta_rule", args, h0, None, impl="cpp")


@needs_torch_cpp
def test_torch_cpp_fp64_empty_and_fallback(monkeypatch):
    delta_cpp_fp64_empty_and_fallback("gated_delta_rule", monkeypatch)


# ============================================================================= torch: triton vs the reference
C = TRITON_CHUNK


@needs_triton
@pytest.mark.parametrize("case", TRITON_CASES, ids=TRITON_CASE_IDS)
@pytest.mark.parametrize("T", TRITON_LENGTHS, ids=[f"T{t}" for t in TRITON_LENGTHS])
def test_torch_triton_matches_reference(T, case):
    B, init, strong = case
    kw = triton_gdr_inputs(B, T, init=init, strong=strong, seed=T + 10 * B)
    compare_10x_grads(triton_gdr_fn("reference"), triton_gdr_fn("triton"), kw)


@needs_triton
def test_torch_triton_shapes():
    """Default chunk 64 (tile 64, ragged tail), several V blocks (V > 64), odd K; the kernel module called directly."""
    kw = triton_gdr_inputs(1, 70, init=True, strong=False, H=1, K=5, V=3)
    fast = tgdr_triton.triton_gated_delta_rule

    def fn(**kw):
        return fast(**kw, output_final_state=True)
    compare_10x_grads(triton_gdr_fn("reference"), fn, kw)
    kw = triton_gdr_inputs(1, C + 1, init=True, strong=True, H=1, K=8, V=70)
    compare_10x_grads(triton_gdr_fn("reference"), triton_gdr_fn("triton"), kw)
    o, S = fast(**{n: x.to(TRITON_DEVICE) if torch.is_tensor(x) else x
                   for n, x in triton_gdr_inputs(2, C, init=False, strong=False).items()}, chunk_size=C)
    assert S is None and o.shape == (2, C, 2, 6) and o.is_contiguous()


@needs_triton
@pytest.mark.parametrize("chunk_size", [1, 24], ids=["C1", "C24"])
def test_torch_triton_other_chunk_sizes(chunk_size):
    """A chunk of one step, and one that is not a power of two (tile 32, masked rows)."""
    length = 5 if chunk_size == 1 else 30
    kw = triton_gdr_inputs(1, length, init=True, strong=True, H=1)
    compare_10x_grads(triton_gdr_fn("reference"), triton_gdr_fn("triton", chunk_size), kw)


@needs_triton
def test_torch_triton_needs_cuda_or_the_interpreter(monkeypatch):
    """The SSD Triton kernel's check too (one test for both kernels, kept here)."""
    triton_ssd = triton_module("ssd")
    monkeypatch.setattr(tgdr_triton, "_INTERPRETED", False)
    monkeypatch.setattr(triton_ssd, "_INTERPRETED", False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        gated_delta_rule(**triton_gdr_inputs(1, 3, init=False, strong=False), impl="triton")
    kw = triton_ssd_inputs(1, 3, init=False, strong=False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        ssd_fn("triton", C)(**kw)


@needs_triton
def test_torch_triton_empty_and_fp64():
    kw = triton_gdr_inputs(2, 0, init=True, strong=False)
    o, S = gated_delta_rule(**kw, output_final_state=True, impl="triton")
    assert o.shape == (2, 0, 2, 6)
    torch.testing.assert_close(S, kw["initial_state"])
    kw = {n: None if x is None else x.double() for n, x in triton_gdr_inputs(2, 11, init=True, strong=True).items()}
    o, S = gated_delta_rule(**kw, output_final_state=True, impl="triton", chunk_size=C)   # the torch chunked form
    o_r, S_r = gated_delta_rule(**kw, output_final_state=True, impl="reference")
    assert o.dtype == S.dtype == torch.float64
    torch.testing.assert_close(o, o_r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, S_r, rtol=1e-10, atol=1e-10)


@needs_triton
def test_torch_triton_bf16():
    delta_triton_bf16(gated=True)


@needs_triton
def test_torch_auto_picks_triton_on_cuda_only(monkeypatch):
    delta_auto_picks_triton_on_cuda_only("gated_delta_rule", monkeypatch)


# ============================================================================= JAX: the reference vs torch's
PARITY = (tgdr, jgdr, "gated_delta_rule", ("q", "k", "v", "g", "beta"), {})   # torch, jax, entry, arguments, kwargs


@pytest.mark.parametrize("T,init", [(1, True), (7, False), (7, True)], ids=["T1-h0", "T7-zero", "T7-h0"])
def test_jax_reference_matches_torch(T, init):
    delta_matches_torch_reference(*PARITY, T, init)


def test_jax_step_matches_torch_step_and_edge_cases():
    delta_step_matches_torch_step_and_edge_cases(*PARITY)


# =============================================================================== JAX: fast forms vs the reference
T_JAX = 8
# (length, batch, h0, strong, seed): the original case, and one added at T+1 with strong decay and no h0
SCAN_CHUNK_CASES = [(3 * T_JAX + 5, 3, True, False, 3), (T_JAX + 1, 1, False, True, T_JAX + 1)]


@pytest.mark.parametrize("length,batch,h0,strong", CASES, ids=[case_id(c) for c in CASES])
def test_jax_chunk_matches_reference(length, batch, h0, strong):
    compare_fast("gated_delta_rule", fast_inputs("gated_delta_rule", batch, length, h0=h0, strong=strong, seed=length))


@pytest.mark.parametrize("length,batch,h0,strong,seed", SCAN_CHUNK_CASES,
                         ids=[case_id(c[:4]) for c in SCAN_CHUNK_CASES])
def test_jax_scan_chunk_matches_reference(length, batch, h0, strong, seed):
    """impl "scan_chunk": the reference's values, the chunked form's gradients (custom VJP)."""
    compare_fast("gated_delta_rule", fast_inputs("gated_delta_rule", batch, length, h0=h0, strong=strong, seed=seed),
                 impl="scan_chunk")


def test_jax_chunk_64_and_selective_scan_groups_off():
    """The delta rule's default chunk (64: six block-doubling levels) on a ragged length; B/C without a group axis
    (the selective scan's chunked form: one test for both, kept here)."""
    compare_fast("gated_delta_rule", fast_inputs("gated_delta_rule", 1, 70, h0=True, strong=False), 64)
    kw = fast_inputs("selective_scan", 2, 20, h0=True, strong=True)
    kw["B"], kw["C"] = kw["B"][:, 0], kw["C"][:, 0]  # (B, N, L): one group shared by all channels
    compare_fast("selective_scan", kw, 8)


@needs_jax_cpp
@pytest.mark.parametrize("length,batch,h0,strong", CASES, ids=[case_id(c) for c in CASES])
def test_jax_cpp_matches_reference(length, batch, h0, strong):
    """The C++ kernel as an XLA custom call (checkpointing every 16) == the lax.scan reference, values and the
    gradient of every input."""
    kw = fast_inputs("gated_delta_rule", batch, length, h0=h0, strong=strong, seed=length)
    compare_fast("gated_delta_rule", kw, impl="cpp")


@needs_jax_cpp
def test_jax_cpp_matches_torch_and_runs_under_vmap():
    """Same machine code as torch's impl="cpp": equal to rounding; vmap loops over the mapped axis."""
    cpp_matches_torch_and_runs_under_vmap("gated_delta_rule", fast_inputs("gated_delta_rule", 3, 3 * T_JAX + 5,
                                                                          h0=True, strong=False, seed=11))


def test_jax_chunk_matches_torch_fast():
    chunk_matches_torch_fast("gated_delta_rule", fast_inputs("gated_delta_rule", 3, 3 * T_JAX + 5, h0=True,
                                                             strong=False, seed=7))


def test_jax_auto_picks_the_fast_form_and_bad_impl_raises():
    """auto: the C++ kernel as an XLA custom call (measured fastest on CPU), else scan_chunk."""
    auto = jgdr_cpp.gated_delta_rule_cpp if JAX_CPP else jgdr_chunk.scan_chunk_gated_delta_rule
    auto_and_reference_picks(jax_ops.OPS["gated_delta_rule"], auto, jgdr_naive.reference)


def test_jax_chunk_bf16_inputs_keep_their_dtype():
    bf16_inputs_keep_their_dtype("gated_delta_rule", fast_inputs("gated_delta_rule", 1, 9, h0=False, strong=False))


def test_jax_long_sequence_stays_finite():
    """16k steps through the auto implementation at its default chunk size."""
    long_sequence_stays_finite("gated_delta_rule", fast_inputs("gated_delta_rule", 1, 16384, h0=True, strong=False),
                               None)
