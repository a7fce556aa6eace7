"""Tests for the SSM kernels: selective_scan (Mamba-1), ssd (Mamba-2), linear_recurrence (Griffin).

Each sequential reference is checked against an independent formulation: transformers' pure-torch kernels
(``mamba_selective_scan``, ``mamba2_chunk_scan``) and closed forms written here from cumulative sums of the
log-decays (quadratic "attention-like" forms, float64).

Glossary of dimension letters:
    B: batch    L: sequence length    D: channels    N: state size    G: groups    H: heads    P: head dim
"""

import pytest
import torch
import torch.nn.functional as F

from hybridc_torch.ops import OPS, linear_recurrence, linear_recurrence_step, selective_scan, selective_scan_step
from hybridc_torch.ops import ssd, ssd_step
from hybridc_torch.ops.linear_recurrence import naive as lr_naive
from hybridc_torch.ops.selective_scan import naive as ss_naive
from hybridc_torch.ops.ssd import naive as ssd_naive

LENGTHS = [1, 7, 33]
F64 = torch.float64


def _decay_matrix(log_a: torch.Tensor) -> torch.Tensor:
    """log_a (..., L) -> M (..., L, L) with M[t, s] = exp(sum_{s<r<=t} log_a_r) for s <= t, else 0."""
    cs = torch.cumsum(log_a, dim=-1)  # (..., L)
    diff = cs[..., :, None] - cs[..., None, :]  # (..., L, L)
    causal = torch.ones(diff.shape[-2:], dtype=torch.bool, device=diff.device).tril()
    return torch.where(causal, diff, torch.full_like(diff, -torch.inf)).exp()


# ------------------------------------------------------------------------------------------- selective scan
def _ss_inputs(batch, channels, state, length, groups=None, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    bc_shape = (batch, state, length) if groups is None else (batch, groups, state, length)
    return dict(
        u=r(batch, channels, length), delta=r(batch, channels, length) * 0.5,
        A=-torch.rand(channels, state, generator=g, dtype=dtype) * 2 - 0.1,
        B=r(*bc_shape), C=r(*bc_shape), D=r(channels), z=r(batch, channels, length),
        delta_bias=r(channels) * 0.3,
    )


def _ss_closed_form(u, delta, A, B, C, D, z, delta_bias, h0):
    """Quadratic form: h_t = exp(S_t) h0 + sum_{s<=t} exp(S_t - S_s) dt_s B_s u_s with S_t = cumsum(dt) A."""
    dt = F.softplus(delta + delta_bias[:, None])  # (B, D, L)
    log_a = dt[..., None] * A[:, None, :]  # (B, D, L, N)
    M = _decay_matrix(log_a.movedim(2, -1))  # (B, D, N, L, L)
    dBu = (dt * u)[:, :, None, :] * B[:, None, :, :]  # (B, D, N, L)
    h = torch.einsum("bdnts,bdns->bdnt", M, dBu)  # (B, D, N, L)
    h = h + torch.exp(torch.cumsum(log_a, dim=2)).movedim(2, -1) * h0[..., None]
    y = torch.einsum("bdnt,bnt->bdt", h, C) + D[:, None] * u  # (B, D, L)
    return y * F.silu(z), h[..., -1]


@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero-h0", "h0"])
def test_selective_scan_matches_closed_form(length, with_h0):
    kw = _ss_inputs(2, 5, 3, length)
    h0 = torch.randn(2, 5, 3, dtype=F64) if with_h0 else torch.zeros(2, 5, 3, dtype=F64)
    out, last = selective_scan(**kw, delta_softplus=True, return_last_state=True,
                               initial_state=h0 if with_h0 else None)
    ref_out, ref_last = _ss_closed_form(**kw, h0=h0)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, ref_last, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
def test_selective_scan_matches_transformers(length):
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan

    kw = _ss_inputs(2, 6, 4, length, dtype=torch.float32, seed=1)
    out, last = selective_scan(**kw, delta_softplus=True, return_last_state=True)
    hf_out, hf_last = mamba_selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], D=kw["D"], z=kw["z"],
                                           delta_bias=kw["delta_bias"], delta_softplus=True,
                                           return_last_state=True)
    torch.testing.assert_close(out, hf_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, hf_last, rtol=1e-5, atol=1e-5)
    assert out.dtype == torch.float32 and last.dtype == torch.float32


@pytest.mark.parametrize("length", [1, 7], ids=lambda n: f"L{n}")
def test_selective_scan_groups_equal_per_group_calls(length):
    kw = _ss_inputs(2, 6, 3, length, groups=3, seed=2)
    out = selective_scan(**kw, delta_softplus=True)  # (B, D, L)
    for g in range(3):
        sl = slice(2 * g, 2 * g + 2)
        part = selective_scan(kw["u"][:, sl], kw["delta"][:, sl], kw["A"][sl], kw["B"][:, g], kw["C"][:, g],
                              D=kw["D"][sl], z=kw["z"][:, sl], delta_bias=kw["delta_bias"][sl], delta_softplus=True)
        torch.testing.assert_close(out[:, sl], part, rtol=1e-12, atol=1e-12)


def test_selective_scan_step_equals_reference_one_step():
    kw = _ss_inputs(3, 4, 5, 1, seed=3)
    h0 = torch.randn(3, 4, 5, dtype=F64)
    out, last = selective_scan(**kw, delta_softplus=True, return_last_state=True, initial_state=h0)
    h0_copy = h0.clone()
    y_t, new = selective_scan_step(h0, kw["u"][..., 0], kw["delta"][..., 0], kw["A"], kw["B"][..., 0],
                                   kw["C"][..., 0], kw["D"], kw["z"][..., 0], kw["delta_bias"], True)
    torch.testing.assert_close(y_t, out[..., 0], rtol=0, atol=1e-14)
    torch.testing.assert_close(new, last, rtol=0, atol=1e-14)
    assert torch.equal(h0, h0_copy)


def test_selective_scan_optional_args_and_default_return():
    kw = _ss_inputs(1, 3, 2, 7, seed=4)
    out = selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"])
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 7)
    # Without softplus/bias/D/z: direct recurrence h = exp(delta A) h + delta B u, y = C.h
    h = torch.zeros(1, 3, 2, dtype=F64)
    for t in range(7):
        d = kw["delta"][..., t, None]
        h = torch.exp(d * kw["A"]) * h + d * kw["B"][:, None, :, t] * kw["u"][..., t, None]
        torch.testing.assert_close(out[..., t], (h * kw["C"][:, None, :, t]).sum(-1), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------- ssd
def _ssd_inputs(batch, length, heads, head_dim, groups, state, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(
        x=r(batch, length, heads, head_dim), dt=r(batch, length, heads) * 0.5,
        A=-torch.rand(heads, generator=g, dtype=dtype) * 2 - 0.1,
        B=r(batch, length, groups, state), C=r(batch, length, groups, state),
        D=r(heads), dt_bias=r(heads) * 0.3,
    )


def _ssd_closed_form(x, dt, A, B, C, D, dt_bias, h0, z=None):
    """SSD quadratic (masked attention) form: y_t = sum_s (C_t . B_s) exp(S_t - S_s) dt_s x_s + C_t exp(S_t) h0."""
    heads = x.shape[2]
    dt = F.softplus(dt + dt_bias)  # (B, L, H)
    Bh = B.repeat_interleave(heads // B.shape[2], dim=2)  # (B, L, H, N)
    Ch = C.repeat_interleave(heads // C.shape[2], dim=2)  # (B, L, H, N)
    log_a = (dt * A).transpose(1, 2)  # (B, H, L)
    M = _decay_matrix(log_a)  # (B, H, L, L)
    scores = torch.einsum("bthn,bshn->bhts", Ch, Bh) * M  # (B, H, L, L)
    y = torch.einsum("bhts,bsh,bshp->bthp", scores, dt, x)  # (B, L, H, P)
    decay0 = torch.exp(torch.cumsum(log_a, dim=-1))  # (B, H, L)
    y = y + torch.einsum("bthn,bhpn,bht->bthp", Ch, h0, decay0) + D[:, None] * x
    final = torch.einsum("bhs,bsh,bshp,bshn->bhpn", M[:, :, -1], dt, x, Bh) + decay0[..., -1, None, None] * h0
    return (y if z is None else y * F.silu(z)), final


@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("groups", [1, 2], ids=lambda g: f"G{g}")
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero-h0", "h0"])
def test_ssd_matches_quadratic_form(length, groups, with_h0):
    kw = _ssd_inputs(2, length, 4, 3, groups, 5)
    h0 = torch.randn(2, 4, 3, 5, dtype=F64) if with_h0 else torch.zeros(2, 4, 3, 5, dtype=F64)
    y, final = ssd(**kw, chunk_size=8, initial_states=h0 if with_h0 else None, dt_softplus=True,
                   return_final_states=True)
    ref_y, ref_final = _ssd_closed_form(**kw, h0=h0)
    torch.testing.assert_close(y, ref_y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, ref_final, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("chunk", [4, 16], ids=lambda c: f"chunk{c}")
def test_ssd_matches_transformers_chunked(length, chunk):
    from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan

    kw = _ssd_inputs(2, length, 4, 3, 2, 5, dtype=torch.float32, seed=1)
    h0 = torch.randn(2, 4, 3, 5)
    y, final = ssd(**kw, chunk_size=chunk, initial_states=h0, dt_softplus=True, return_final_states=True)
    hf_y, hf_final = mamba2_chunk_scan(kw["x"], kw["dt"], kw["A"], kw["B"], kw["C"], chunk, D=kw["D"],
                                       dt_bias=kw["dt_bias"], initial_states=h0, dt_softplus=True,
                                       return_final_states=True)
    torch.testing.assert_close(y, hf_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, hf_final, rtol=1e-5, atol=1e-5)


def test_ssd_gate_and_per_channel_D():
    kw = _ssd_inputs(2, 7, 4, 3, 1, 5, seed=2)
    z = torch.randn(2, 7, 4, 3, dtype=F64)
    D_hp = torch.randn(4, 3, dtype=F64)
    y = ssd(**{**kw, "D": D_hp}, chunk_size=4, z=z, dt_softplus=True)
    base = ssd(**{**kw, "D": None}, chunk_size=4, dt_softplus=True)
    torch.testing.assert_close(y, (base + D_hp * kw["x"]) * F.silu(z), rtol=1e-12, atol=1e-12)


def test_ssd_step_equals_reference_one_step():
    kw = _ssd_inputs(3, 1, 4, 2, 2, 3, seed=3)
    h0 = torch.randn(3, 4, 2, 3, dtype=F64)
    z = torch.randn(3, 1, 4, 2, dtype=F64)
    y, final = ssd(**kw, chunk_size=1, z=z, initial_states=h0, dt_softplus=True, return_final_states=True)
    h0_copy = h0.clone()
    y_t, new = ssd_step(h0, kw["x"][:, 0], kw["dt"][:, 0], kw["A"], kw["B"][:, 0], kw["C"][:, 0], kw["D"],
                        z[:, 0], kw["dt_bias"], True)
    torch.testing.assert_close(y_t, y[:, 0], rtol=0, atol=1e-14)
    torch.testing.assert_close(new, final, rtol=0, atol=1e-14)
    assert torch.equal(h0, h0_copy)


# ------------------------------------------------------------------------------------------ linear recurrence
@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero-h0", "h0"])
def test_linear_recurrence_matches_cumprod_closed_form(length, with_h0):
    g = torch.Generator().manual_seed(length)
    a = torch.rand(2, length, 6, generator=g, dtype=F64) * 0.9 + 0.05  # (B, L, D)
    x = torch.randn(2, length, 6, generator=g, dtype=F64)
    h0 = torch.randn(2, 6, generator=g, dtype=F64) if with_h0 else torch.zeros(2, 6, dtype=F64)
    h, h_last = linear_recurrence(a, x, h0 if with_h0 else None)
    M = _decay_matrix(torch.log(a).transpose(1, 2))  # (B, D, L, L)
    ref = torch.einsum("bdts,bsd->btd", M, x) + torch.cumprod(a, dim=1) * h0[:, None]
    torch.testing.assert_close(h, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h_last, ref[:, -1], rtol=1e-10, atol=1e-10)


def test_linear_recurrence_dtypes_and_step():
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


# -------------------------------------------------------------------------------------------- impl dispatch
@pytest.mark.parametrize("op, naive", [("selective_scan", ss_naive), ("ssd", ssd_naive),
                                       ("linear_recurrence", lr_naive)], ids=["selective_scan", "ssd", "linear_recurrence"])
def test_impl_registry_and_unknown_impl(op, naive):
    op = OPS[op]
    assert "reference" in op.impls and len(op.impls) >= 2  # the reference plus a fast CPU kernel
    assert op.pick("reference") is naive.reference
    assert op.pick("auto", device="cuda") is op.get("triton")  # the Triton kernels (triton is installed)
    with pytest.raises(ValueError, match="auto.*reference"):
        op.pick("triton-nope")


def test_entry_points_reject_unknown_impl():
    kw = _ss_inputs(1, 2, 2, 3)
    with pytest.raises(ValueError, match="reference"):
        selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], impl="fast")
    s = _ssd_inputs(1, 3, 2, 2, 1, 2)
    with pytest.raises(ValueError, match="reference"):
        ssd(s["x"], s["dt"], s["A"], s["B"], s["C"], 4, impl="fast")
    with pytest.raises(ValueError, match="reference"):
        linear_recurrence(torch.rand(1, 3, 2), torch.rand(1, 3, 2), impl="fast")
