"""rwkv7 (RWKV-7's generalized delta rule, diagonal-plus-low-rank transition): every implementation of both backends
against the sequential reference (``naive``).

torch: the reference against flash-linear-attention's naive DPLR forms (``fla.ops.generalized_delta_rule.dplr.naive``:
``dplr_recurrence``, ``dplr_chunkwise``) in values and gradients; the chunked form (``chunk``: factorised scores within
the fp32 bound, exact pairwise scores past it) against the reference in values, final states and the gradient of
every input. JAX: the reference against torch's on the same numbers; ``chunk`` and ``scan_chunk`` (lax.scan values,
the chunked form's gradients) against the JAX reference, values and ``jax.grad``. Lengths walk every class of the
chunked walk (1, C-1, C, C+1, 2C+3, 3C+5 with a small chunk C = 8).

Dimension glossary: B batch, T time, H heads, K key head dim, V value head dim, C chunk size.
"""
from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import pytest
import torch

from hybridc_jax import ops as jax_ops
from hybridc_jax.ops.rwkv7 import chunk as jrk_chunk
from hybridc_jax.ops.rwkv7 import naive as jrk_naive
from hybridc_torch.ops import rwkv7
from hybridc_torch.ops.rwkv7 import chunk as rk_chunk
from hybridc_torch.ops.rwkv7 import naive as rk_naive
from ops._inputs import B, H, K, delta_inputs, fast_inputs, fla_inputs
from ops._jax_checks import (CASES, auto_and_reference_picks, case_id, chunk_matches_torch_fast, close_fast,
                             compare_fast, delta_matches_torch_reference,
                             delta_step_matches_torch_step_and_edge_cases, long_sequence_stays_finite)
from ops._torch_checks import (FLA_GRAD_TOL, FLA_TOL, close_scaled, delta_auto_on_cpu, delta_check, delta_dtypes,
                               delta_empty_sequence_and_no_state, delta_long_sequence_stays_finite, delta_run,
                               fla_grads, fla_module, fla_run, impl_dispatch, needs_fla,
                               split_sequences_chain_through_state)

pytestmark = pytest.mark.usefixtures("single_thread")
fla_dplr = fla_module("fla.ops.generalized_delta_rule.dplr.naive")
# the op packages (entry point, step, reference); `from hybridc_jax.ops import ssd` gives the entry callable itself
jrk, trk = (importlib.import_module(f"hybridc_{backend}.ops.rwkv7") for backend in ("jax", "torch"))


def _tr(x):
    """(B, T, H, ...) <-> (B, H, T, ...)."""
    return x.transpose(1, 2)


# ============================================================================ torch: the reference vs fla's naive
FLA_CASES = [pytest.param(T, init, id=f"B{B}-T{T}-H{H}-{'h0' if init else 'zero'}")
             for T in (1, 7, 33) for init in (False, True)]


@needs_fla
@pytest.mark.parametrize("T,init", FLA_CASES)
def test_torch_reference_matches_fla_dplr_recurrence(T, init):
    x = fla_inputs(T)
    h0 = x["h0"] if init else None
    o, S = fla_run("rwkv7", x, h0)   # dplr_recurrence always scales q by K**-0.5
    o_ref, S_ref = fla_dplr.dplr_recurrence(*(_tr(x[n]) for n in ("q", "k", "v", "a", "b", "w")),
                                            initial_state=None if h0 is None else h0.clone())
    torch.testing.assert_close(o, _tr(o_ref), **FLA_TOL)
    torch.testing.assert_close(S, S_ref, **FLA_TOL)


@needs_fla
def test_torch_reference_matches_fla_dplr_chunkwise():
    x = fla_inputs(16, seed=3)
    o, S = fla_run("rwkv7", x, x["h0"])
    o_ref, S_ref = fla_dplr.dplr_chunkwise(*(_tr(x[n]) for n in ("q", "k", "v", "a", "b", "w")),
                                           initial_state=x["h0"].clone(), chunk_size=8)
    torch.testing.assert_close(o, _tr(o_ref), **FLA_TOL)
    torch.testing.assert_close(S, S_ref, **FLA_TOL)


@needs_fla
def test_torch_grads_match_fla():
    x = fla_inputs(7)
    names = ("q", "w", "k", "v", "a", "b", "h0")
    ours = fla_grads(lambda t: rwkv7(t["q"], t["w"], t["k"], t["v"], t["a"], t["b"], scale=K ** -0.5,
                                     initial_state=t["h0"], output_final_state=True), {n: x[n] for n in names})
    ref = fla_grads(lambda t: (lambda o, S: (_tr(o), S))(*fla_dplr.dplr_recurrence(
        *(_tr(t[n]) for n in ("q", "k", "v", "a", "b", "w")), initial_state=t["h0"])), {n: x[n] for n in names})
    for n in names:
        torch.testing.assert_close(ours[n], ref[n], **FLA_GRAD_TOL)


@pytest.mark.parametrize("T1", [0, 3, 9], ids=lambda t: f"split{t}")
def test_torch_split_sequences_chain_through_state(T1):
    split_sequences_chain_through_state("rwkv7", T1)


def test_torch_impl_dispatch():
    impl_dispatch("rwkv7", rk_naive)


# ============================================================================== torch: chunk vs the reference
CHUNK = 8
LENGTHS = [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 3, 3 * CHUNK + 5]


@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
@pytest.mark.parametrize("init", [False, True], ids=["zero", "h0"])
@pytest.mark.parametrize("Bsz", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"T{t}")
def test_torch_chunk_matches_reference(T, Bsz, init, strong):
    args, h0 = delta_inputs("rwkv7", Bsz, T, strong=strong, init=init, seed=T + 10 * Bsz)
    delta_check("rwkv7", args, h0, CHUNK)


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 64], ids=lambda c: f"C{c}")
def test_torch_chunk_other_chunk_sizes(chunk_size):
    args, h0 = delta_inputs("rwkv7", 2, 37, strong=False)
    delta_check("rwkv7", args, h0, chunk_size)


def test_torch_chunk_overflow_fallback(monkeypatch):
    """Past the factorisation bound (|in-chunk cumulative log decay| > 60 in fp32) the exact pairwise scores run."""
    gen = torch.Generator().manual_seed(3)
    args, h0 = delta_inputs("rwkv7", 2, 40, strong=True)
    args = list(args)
    args[1] = -10.0 * torch.sigmoid(torch.randn(args[1].shape, generator=gen))   # in-chunk sums reach ~-160
    delta_check("rwkv7", args, h0, 16)
    o_pair, S_pair, _ = delta_run("rwkv7", args, h0, "chunk", 16, grads=False)
    calls = []
    orig = rk_chunk._pair_scores
    monkeypatch.setattr(rk_chunk, "_pair_scores", lambda *a: calls.append(1) or orig(*a))
    delta_run("rwkv7", args, h0, "chunk", 16, grads=False)
    assert calls, "the pairwise path should run past the bound"
    calls.clear()
    weak, h0w = delta_inputs("rwkv7", 2, 40, strong=False)
    delta_run("rwkv7", weak, h0w, "chunk", 16, grads=False)
    assert not calls, "the factorised path should run within the bound"
    # forcing the pairwise path on moderate decays gives the factorised result
    monkeypatch.setitem(rk_chunk._FACTOR_BOUND, torch.float32, -1.0)
    args_m, h0m = delta_inputs("rwkv7", 2, 40, strong=True)
    o1, S1, _ = delta_run("rwkv7", args_m, h0m, "chunk", 16, grads=False)
    monkeypatch.setitem(rk_chunk._FACTOR_BOUND, torch.float32, 60.0)
    o2, S2, _ = delta_run("rwkv7", args_m, h0m, "chunk", 16, grads=False)
    close_scaled(o1, o2, what="pairwise vs factorised output")
    close_scaled(S1, S2, what="pairwise vs factorised state")
    assert torch.isfinite(o_pair).all() and torch.isfinite(S_pair).all()


def test_torch_auto_on_cpu(monkeypatch):
    delta_auto_on_cpu("rwkv7", rk_naive, monkeypatch)


def test_torch_chunk_empty_sequence_and_no_state():
    delta_empty_sequence_and_no_state("rwkv7")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "fp64"])
def test_torch_chunk_dtypes(dtype):
    delta_dtypes("rwkv7", dtype)


def test_torch_long_sequence_stays_finite():
    delta_long_sequence_stays_finite("rwkv7")


# ============================================================================= JAX: the reference vs torch's
PARITY = (trk, jrk, "rwkv7", ("q", "w", "k", "v", "a", "b"), {"scale": K ** -0.5})   # torch, jax, entry, args, kwargs


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
    compare_fast("rwkv7", fast_inputs("rwkv7", batch, length, h0=h0, strong=strong, seed=length))


@pytest.mark.parametrize("length,batch,h0,strong,seed", SCAN_CHUNK_CASES,
                         ids=[case_id(c[:4]) for c in SCAN_CHUNK_CASES])
def test_jax_scan_chunk_matches_reference(length, batch, h0, strong, seed):
    """impl "scan_chunk" (auto): the reference's values, the chunked form's gradients (custom VJP)."""
    compare_fast("rwkv7", fast_inputs("rwkv7", batch, length, h0=h0, strong=strong, seed=seed), impl="scan_chunk")


def test_jax_chunk_exact_path_under_vmap_has_finite_grads():
    """Under vmap `lax.cond` runs both branches: the factorised one must stay finite for decays past its bound."""
    kw = {k: jnp.asarray(v) for k, v in fast_inputs("rwkv7", 2, 11, h0=True, strong=True).items()}

    def one(kw):
        kw = {k: v[None] for k, v in kw.items()}
        o, s = jrk_chunk.chunk_rwkv7(**kw, output_final_state=True, chunk_size=T_JAX)
        return o[0], s[0]

    o, s = jax.jit(jax.vmap(one))(kw)
    o_ref, s_ref = jrk_naive.reference(**kw, output_final_state=True)
    close_fast(o, o_ref)
    close_fast(s, s_ref)
    g = jax.jit(jax.grad(lambda w: jnp.sum(jax.vmap(one)({**kw, "w": w})[0])))(kw["w"])
    assert bool(jnp.all(jnp.isfinite(g)))


def test_jax_chunk_matches_torch_fast():
    chunk_matches_torch_fast("rwkv7", fast_inputs("rwkv7", 3, 3 * T_JAX + 5, h0=True, strong=False, seed=7))


def test_jax_auto_picks_the_fast_form_and_bad_impl_raises():
    """auto: the lax.scan forward with the chunked backward (measured fastest on CPU)."""
    auto_and_reference_picks(jax_ops.OPS["rwkv7"], jrk_chunk.scan_chunk_rwkv7, jrk_naive.reference)


def test_jax_long_sequence_stays_finite():
    """16k steps through the auto implementation at its default chunk size."""
    long_sequence_stays_finite("rwkv7", fast_inputs("rwkv7", 1, 16384, h0=True, strong=False), None)
