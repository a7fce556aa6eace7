"""Random inputs shared by several tests/ops/test_<op>.py files (builders one op file uses live in that file).

Each builder is the one its tests were written with (same draws, same seeds), named by the check it feeds:
    oracle_ssd_inputs    torch references against closed forms and transformers (float64)
    rand, torch_and_jax, parity_ssd_inputs, parity_delta_inputs
                         JAX references against torch's on the same numbers
    fla_inputs           torch delta-family references against fla's naive forms
    delta_inputs         torch chunked / C++ delta-family kernels against the reference
    triton_gdr_inputs, triton_ssd_inputs
                         torch Triton delta rule and SSD kernels against the reference
    fast_inputs          JAX fast forms (chunk, scan_chunk, cpp) against the JAX reference, all six ops
    pallas_lr_inputs     JAX Pallas linear recurrence against the reference

Dimension glossary: B batch, L / T sequence length, D channels, N state size, G groups, H heads, P head dim,
K key head dim, V value head dim.
"""
from __future__ import annotations

from types import SimpleNamespace as NS

import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

F64 = torch.float64


# ------------------------------------------------------------------------------------------- SSD oracles (torch)
def oracle_ssd_inputs(batch, length, heads, head_dim, groups, state, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(
        x=r(batch, length, heads, head_dim), dt=r(batch, length, heads) * 0.5,
        A=-torch.rand(heads, generator=g, dtype=dtype) * 2 - 0.1,
        B=r(batch, length, groups, state), C=r(batch, length, groups, state),
        D=r(heads), dt_bias=r(heads) * 0.3,
    )


# ----------------------------------------------------------------------------------- JAX vs torch references
PARITY_BATCH = 2


def rand(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def torch_and_jax(d: dict):
    """The same inputs as torch tensors and jax arrays (None stays None)."""
    return ({k: None if v is None else torch.from_numpy(v) for k, v in d.items()},
            {k: None if v is None else jnp.asarray(v) for k, v in d.items()})


def parity_ssd_inputs(length, d_shape, full):
    b, h, p, g, n = PARITY_BATCH, 4, 3, 2, 5
    return dict(x=rand(b, length, h, p, seed=1), dt=0.5 * rand(b, length, h, seed=2), A=-np.abs(rand(h, seed=3)) - 0.1,
                B=rand(b, length, g, n, seed=4), C=rand(b, length, g, n, seed=5),
                D=rand(*d_shape, seed=6) if full else None, z=rand(b, length, h, p, seed=7) if full else None,
                dt_bias=0.3 * rand(h, seed=8) if full else None,
                initial_states=rand(b, h, p, n, seed=9) if full else None)


# ------------------------------------------------------------------ delta family: fla oracles and JAX parity
B, H, K, V = 2, 2, 8, 16


def fla_inputs(T, seed=0, dtype=torch.float32):
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


def parity_delta_inputs(T, seed=0):
    """Well-conditioned torch inputs: unit-norm q/k, beta in (0,1), log decays in (-e^-0.5, 0)."""
    g = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=g)
    kk = F.normalize(rn(B, T, H, K), dim=-1)
    return dict(q=F.normalize(rn(B, T, H, K), dim=-1), k=F.normalize(rn(B, T, H, K), dim=-1), v=rn(B, T, H, V),
                g=F.logsigmoid(rn(B, T, H)), beta=torch.sigmoid(rn(B, T, H)),
                w=-0.6065 * torch.sigmoid(rn(B, T, H, K)), a=-kk, b=kk * torch.sigmoid(rn(B, T, H, K)),
                h0=0.5 * rn(B, H, K, V))


# ------------------------------------------------------------- delta family: torch fast kernels vs reference
FAST_H, FAST_K, FAST_V = 2, 8, 6


def delta_inputs(kernel, Bsz, T, *, strong, seed=0, h=FAST_H, k_dim=FAST_K, v_dim=FAST_V, dtype=torch.float32,
                 init=True):
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


# ------------------------------------------------------------------------ torch Triton delta rule and SSD
def triton_gdr_inputs(B, T, *, init, strong, H=2, K=8, V=6, seed=0, gated=True):
    """Unit-norm q/k, beta in (0, 1); strong: g around -3 per step, weak: g near 0 (plain delta rule: beta near 1)."""
    gen = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=gen)

    kw = dict(q=F.normalize(rn(B, T, H, K), dim=-1), k=F.normalize(rn(B, T, H, K), dim=-1), v=rn(B, T, H, V))
    if gated:
        kw["g"] = (-6.0 if strong else -0.05) * torch.sigmoid(rn(B, T, H))
        kw["beta"] = torch.sigmoid(rn(B, T, H))
    else:
        kw["beta"] = 0.9 + 0.1 * torch.sigmoid(rn(B, T, H)) if strong else 0.5 * torch.sigmoid(rn(B, T, H))
    kw["initial_state"] = 0.5 * rn(B, H, K, V) if init else None
    return kw


def triton_ssd_inputs(B, L, *, init, strong, groups=1, full=True, H=2, P=6, N=5, seed=0):
    """full: D (H,), z, dt_bias and softplus; plain: none of them (dt positive). strong: |dt A| ~ 1-2 per step."""
    gen = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=gen)

    A = -(1.0 + 2.0 * torch.rand(H, generator=gen)) if strong else -0.05 * torch.rand(H, generator=gen)
    kw = dict(x=rn(B, L, H, P), A=A, B=rn(B, L, groups, N), C=rn(B, L, groups, N))
    if full:
        kw.update(dt=0.5 * rn(B, L, H), D=rn(H), z=rn(B, L, H, P), dt_bias=0.5 * rn(H) - 0.5, dt_softplus=True)
    else:
        kw["dt"] = 0.1 + torch.rand(B, L, H, generator=gen)
    kw["initial_states"] = 0.5 * rn(B, H, P, N) if init else None
    return kw


# ------------------------------------------------------------------------------- JAX fast forms, all six ops
def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def fast_inputs(kernel, batch, length, *, h0, strong, seed=0):
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


# ------------------------------------------------------------------------------ JAX Pallas linear recurrence
PALLAS_CHUNK, PALLAS_BLOCK, PALLAS_N = 8, 8, 4
PALLAS_LR_CASES = {
    "L1-B1-D8-h0-strong": NS(L=1, B=1, D=8, h0=True, decay="strong"),
    "L7-B3-D12-weak": NS(L=7, B=3, D=12, h0=False, decay="weak"),
    "L9-B3-D16-h0-mixed": NS(L=9, B=3, D=16, h0=True, decay="mixed"),
    "L29-B1-D12-h0-weak": NS(L=29, B=1, D=12, h0=True, decay="weak"),
}


def pallas_lr_inputs(c: NS, dtype=jnp.float32, seed=0) -> dict:
    """a in (0, 1): strong ~ U(0.05, 0.5), weak ~ U(0.95, 0.999), mixed ~ U(0.05, 0.999)."""
    rng = np.random.default_rng(seed)
    lo, hi = dict(strong=(0.05, 0.5), weak=(0.95, 0.999), mixed=(0.05, 0.999))[c.decay]
    a = jnp.asarray(rng.uniform(lo, hi, (c.B, c.L, c.D)), dtype)
    x = jnp.asarray(rng.standard_normal((c.B, c.L, c.D)), dtype)
    h0 = jnp.asarray(rng.standard_normal((c.B, c.D)), dtype) if c.h0 else None
    return dict(a=a, x=x, initial_state=h0)
