"""Delta-rule family kernels (delta_rule, gated_delta_rule, rwkv7) against flash-linear-attention's naive references.

fla's naive functions (plain torch, run on CPU): fla.ops.delta_rule.naive (delta_rule_recurrence, delta_rule_chunkwise),
fla.ops.gated_delta_rule.naive (naive_recurrent_gated_delta_rule, naive_chunk_gated_delta_rule),
fla.ops.generalized_delta_rule.dplr.naive (dplr_recurrence, dplr_chunkwise).

Dimension glossary: B batch, T time, H heads, K key head dim, V value head dim.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from hybridc_torch import ops
from hybridc_torch.ops import OPS, delta_rule, delta_rule_step, gated_delta_rule, gated_delta_rule_step, rwkv7
from hybridc_torch.ops import rwkv7_step
from hybridc_torch.ops.delta_rule import naive as dr_naive
from hybridc_torch.ops.gated_delta_rule import naive as gdr_naive
from hybridc_torch.ops.rwkv7 import naive as rk_naive

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fla_dr = pytest.importorskip("fla.ops.delta_rule.naive")
    fla_gdr = pytest.importorskip("fla.ops.gated_delta_rule.naive")
    fla_dplr = pytest.importorskip("fla.ops.generalized_delta_rule.dplr.naive")

B, H, K, V = 2, 2, 8, 16
TOL = dict(atol=1e-5, rtol=1e-5)
GRAD_TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: intra-op threads only add contention (10-40x slower on a loaded 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tr(x):
    """(B, T, H, ...) <-> (B, H, T, ...)."""
    return x.transpose(1, 2)


def _inputs(T, seed=0, dtype=torch.float32):
    """Well-conditioned random inputs: unit-norm q/k, beta in (0,1), log decays in (-e^-0.5, 0)."""
    g = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)
    q, k = F.normalize(rn(B, T, H, K), dim=-1), F.normalize(rn(B, T, H, K), dim=-1)
    kk = F.normalize(rn(B, T, H, K), dim=-1)
    return dict(
        q=q, k=k, v=rn(B, T, H, V), beta=torch.sigmoid(rn(B, T, H)), g=F.logsigmoid(rn(B, T, H)),
        w=-0.6065 * torch.sigmoid(rn(B, T, H, K)), a=-kk, b=kk * torch.sigmoid(rn(B, T, H, K)),
        h0=0.5 * rn(B, H, K, V),
    )


def _run_dr(x, h0, impl="auto"):
    return delta_rule(x["q"], x["k"], x["v"], x["beta"], initial_state=h0, output_final_state=True, impl=impl)


def _run_gdr(x, h0, impl="auto"):
    return gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"], initial_state=h0,
                                output_final_state=True, impl=impl)


def _run_rk(x, h0, scale=K ** -0.5, impl="auto"):
    return rwkv7(x["q"], x["w"], x["k"], x["v"], x["a"], x["b"], scale=scale, initial_state=h0,
                    output_final_state=True, impl=impl)


# ----------------------------------------------------------------------------- fla naive recurrences (values)
CASES = [pytest.param(T, init, id=f"B{B}-T{T}-H{H}-{'h0' if init else 'zero'}")
         for T in (1, 7, 33) for init in (False, True)]


@pytest.mark.parametrize("T,init", CASES)
def test_delta_rule_matches_fla_recurrence(T, init):
    x = _inputs(T)
    h0 = x["h0"] if init else None
    o, S = _run_dr(x, h0)
    o_ref, S_ref = fla_dr.delta_rule_recurrence(_tr(x["q"]), _tr(x["k"]), _tr(x["v"]), _tr(x["beta"]),
                                                initial_state=None if h0 is None else h0.clone())
    torch.testing.assert_close(o, _tr(o_ref), **TOL)
    torch.testing.assert_close(S, S_ref, **TOL)


@pytest.mark.parametrize("T,init", CASES)
def test_gated_delta_rule_matches_fla_recurrence(T, init):
    x = _inputs(T)
    h0 = x["h0"] if init else None
    o, S = _run_gdr(x, h0)
    o_ref, S_ref = fla_gdr.naive_recurrent_gated_delta_rule(x["q"], x["k"], x["v"], x["beta"], x["g"],
                                                            initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, o_ref, **TOL)
    torch.testing.assert_close(S, S_ref, **TOL)


@pytest.mark.parametrize("T,init", CASES)
def test_rwkv7_matches_fla_dplr_recurrence(T, init):
    x = _inputs(T)
    h0 = x["h0"] if init else None
    o, S = _run_rk(x, h0)   # dplr_recurrence always scales q by K**-0.5
    o_ref, S_ref = fla_dplr.dplr_recurrence(*(_tr(x[n]) for n in ("q", "k", "v", "a", "b", "w")),
                                            initial_state=None if h0 is None else h0.clone())
    torch.testing.assert_close(o, _tr(o_ref), **TOL)
    torch.testing.assert_close(S, S_ref, **TOL)


# ----------------------------------------------------------------------------- fla naive chunk forms
def test_delta_rule_matches_fla_chunkwise():
    x = _inputs(32, seed=1)
    o, S = _run_dr(x, None)
    o_ref, S_ref = fla_dr.delta_rule_chunkwise(_tr(x["q"]), _tr(x["k"]), _tr(x["v"]), _tr(x["beta"]), chunk_size=8)
    torch.testing.assert_close(o, _tr(o_ref), **TOL)
    torch.testing.assert_close(S, S_ref, **TOL)


@pytest.mark.parametrize("T", [7, 33], ids=lambda T: f"T{T}-h0")
def test_gated_delta_rule_matches_fla_chunk(T):
    x = _inputs(T, seed=2)
    o, S = _run_gdr(x, x["h0"])
    o_ref, S_ref = fla_gdr.naive_chunk_gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"], chunk_size=16,
                                                        initial_state=x["h0"], output_final_state=True)
    torch.testing.assert_close(o, o_ref, **TOL)
    torch.testing.assert_close(S, S_ref, **TOL)


def test_rwkv7_matches_fla_dplr_chunkwise():
    x = _inputs(16, seed=3)
    o, S = _run_rk(x, x["h0"])
    o_ref, S_ref = fla_dplr.dplr_chunkwise(*(_tr(x[n]) for n in ("q", "k", "v", "a", "b", "w")),
                                           initial_state=x["h0"].clone(), chunk_size=8)
    torch.testing.assert_close(o, _tr(o_ref), **TOL)
    torch.testing.assert_close(S, S_ref, **TOL)


# ----------------------------------------------------------------------------- gradients
def _grads(fn, tensors):
    ts = {n: t.detach().clone().requires_grad_(True) for n, t in tensors.items()}
    o, S = fn(ts)
    ((o * torch.linspace(-1, 1, o.shape[-1])).sum() + (S ** 2).sum()).backward()
    return {n: t.grad for n, t in ts.items()}


def test_delta_rule_grads_match_fla():
    x = _inputs(7)
    names = ("q", "k", "v", "beta", "h0")
    ours = _grads(lambda t: delta_rule(t["q"], t["k"], t["v"], t["beta"], initial_state=t["h0"],
                                          output_final_state=True), {n: x[n] for n in names})
    ref = _grads(lambda t: (lambda o, S: (_tr(o), S))(*fla_dr.delta_rule_recurrence(
        _tr(t["q"]), _tr(t["k"]), _tr(t["v"]), _tr(t["beta"]), initial_state=t["h0"])), {n: x[n] for n in names})
    for n in names:
        torch.testing.assert_close(ours[n], ref[n], **GRAD_TOL)


def test_gated_delta_rule_grads_match_fla():
    x = _inputs(7)
    names = ("q", "k", "v", "g", "beta", "h0")
    ours = _grads(lambda t: gated_delta_rule(t["q"], t["k"], t["v"], t["g"], t["beta"], initial_state=t["h0"],
                                                 output_final_state=True), {n: x[n] for n in names})
    ref = _grads(lambda t: fla_gdr.naive_recurrent_gated_delta_rule(
        t["q"], t["k"], t["v"], t["beta"], t["g"], initial_state=t["h0"], output_final_state=True),
        {n: x[n] for n in names})
    for n in names:
        torch.testing.assert_close(ours[n], ref[n], **GRAD_TOL)


def test_rwkv7_grads_match_fla():
    x = _inputs(7)
    names = ("q", "w", "k", "v", "a", "b", "h0")
    ours = _grads(lambda t: rwkv7(t["q"], t["w"], t["k"], t["v"], t["a"], t["b"], scale=K ** -0.5,
                                     initial_state=t["h0"], output_final_state=True), {n: x[n] for n in names})
    ref = _grads(lambda t: (lambda o, S: (_tr(o), S))(*fla_dplr.dplr_recurrence(
        *(_tr(t[n]) for n in ("q", "k", "v", "a", "b", "w")), initial_state=t["h0"])), {n: x[n] for n in names})
    for n in names:
        torch.testing.assert_close(ours[n], ref[n], **GRAD_TOL)


# ----------------------------------------------------------------------------- step functions, contract
def test_steps_equal_reference():
    x = _inputs(5, seed=4)
    h = x["h0"]
    _, S_dr = dr_naive.reference(x["q"], x["k"], x["v"], x["beta"], initial_state=h, output_final_state=True)
    o_dr, S_dr1 = delta_rule_step(x["q"][:, 0], x["k"][:, 0], x["v"][:, 0], x["beta"][:, 0], h)
    o_ref, S_ref = dr_naive.reference(x["q"][:, :1], x["k"][:, :1], x["v"][:, :1], x["beta"][:, :1], initial_state=h,
                                output_final_state=True)
    torch.testing.assert_close(o_dr, o_ref[:, 0], **TOL)
    torch.testing.assert_close(S_dr1, S_ref, **TOL)

    o_g, S_g = gated_delta_rule_step(*(x[n][:, 0] for n in ("q", "k", "v", "g", "beta")), h)
    o_ref, S_ref = gdr_naive.reference(*(x[n][:, :1] for n in ("q", "k", "v", "g", "beta")), initial_state=h,
                                 output_final_state=True)
    torch.testing.assert_close(o_g, o_ref[:, 0], **TOL)
    torch.testing.assert_close(S_g, S_ref, **TOL)

    o_r, S_r = rwkv7_step(*(x[n][:, 0] for n in ("q", "w", "k", "v", "a", "b")), h, scale=0.7)
    o_ref, S_ref = rk_naive.reference(*(x[n][:, :1] for n in ("q", "w", "k", "v", "a", "b")), scale=0.7,
                                initial_state=h, output_final_state=True)
    torch.testing.assert_close(o_r, o_ref[:, 0], **TOL)
    torch.testing.assert_close(S_r, S_ref, **TOL)


def test_steps_do_not_mutate_state():
    x = _inputs(1)
    h = x["h0"].clone()
    delta_rule_step(x["q"][:, 0], x["k"][:, 0], x["v"][:, 0], x["beta"][:, 0], h)
    gated_delta_rule_step(*(x[n][:, 0] for n in ("q", "k", "v", "g", "beta")), h)
    rwkv7_step(*(x[n][:, 0] for n in ("q", "w", "k", "v", "a", "b")), h)
    assert torch.equal(h, x["h0"])


@pytest.mark.parametrize("T1", [0, 3, 9], ids=lambda t: f"split{t}")
def test_split_sequences_chain_through_state(T1):
    x = _inputs(9, seed=5)
    first = {n: t[:, :T1] for n, t in x.items() if n != "h0"}
    second = {n: t[:, T1:] for n, t in x.items() if n != "h0"}
    for run in (_run_dr, _run_gdr, _run_rk):
        o, S = run(x, x["h0"])
        o1, S1 = run(first, x["h0"])
        o2, S2 = run(second, S1)
        torch.testing.assert_close(torch.cat([o1, o2], 1), o, **TOL)
        torch.testing.assert_close(S2, S, **TOL)


def test_final_state_none_unless_requested_and_defaults():
    x = _inputs(4)
    o, S = delta_rule(x["q"], x["k"], x["v"], x["beta"])
    assert S is None and o.shape == (B, 4, H, V) and o.dtype == torch.float32
    o2, _ = delta_rule(x["q"], x["k"], x["v"], x["beta"], scale=K ** -0.5)
    torch.testing.assert_close(o, o2, atol=0, rtol=0)
    o, S = gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"])
    assert S is None and o.shape == (B, 4, H, V)
    o, S = rwkv7(x["q"], x["w"], x["k"], x["v"], x["a"], x["b"])
    o_1, _ = rwkv7(x["q"], x["w"], x["k"], x["v"], x["a"], x["b"], scale=1.0)
    assert S is None and torch.equal(o, o_1)


def test_state_is_fp32_for_low_precision_inputs():
    x = {n: t.to(torch.bfloat16) for n, t in _inputs(3).items()}
    o, S = _run_gdr(x, None)
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32


@pytest.mark.parametrize("naive,name", [(dr_naive, "delta_rule"), (gdr_naive, "gated_delta_rule"), (rk_naive, "rwkv7")],
                         ids=["delta_rule", "gated_delta_rule", "rwkv7"])
def test_impl_dispatch(naive, name):
    assert OPS[name].get("reference") is naive.reference and "chunk" in OPS[name].impls
    x = _inputs(3)
    args = {"delta_rule": ("q", "k", "v", "beta"), "gated_delta_rule": ("q", "k", "v", "g", "beta"),
            "rwkv7": ("q", "w", "k", "v", "a", "b")}[name]
    entry = getattr(ops, name)
    o_auto, _ = entry(*(x[n] for n in args), impl="auto")
    o_ref, _ = entry(*(x[n] for n in args), impl="reference")
    torch.testing.assert_close(o_auto, o_ref, atol=1e-5, rtol=1e-4)  # auto = the chunked kernel on CPU
    with pytest.raises(ValueError, match="'auto', 'reference'"):
        entry(*(x[n] for n in args), impl="triton-please")
