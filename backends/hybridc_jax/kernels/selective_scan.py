"""Selective scan: the S6 recurrence of Mamba-1, in JAX.

Paper: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023), Alg. 2 / Sec. 3.
Reference implementation: mamba_ssm ``selective_scan_fn`` / ``selective_scan_ref`` (state-spaces/mamba); the
same shapes and semantics as transformers' ``mamba_selective_scan`` (models/mamba/modeling_mamba.py).
Mirrors hybridc_torch/kernels/selective_scan.py; the reference scans over time with ``lax.scan``.

CPU ``auto`` runs torch's fused C++ kernel as an XLA custom call (``impl="cpp"``, module ``cpu_ffi``: 0.94x torch's
time forward, B4 L1024 D512 N16); without a C++ compiler it falls back to the XLA form below. GPU: ``pallas``.

XLA form (``impl="chunk"``): there is no matmul form (the decays are per channel *and* state
index), so the gain is in memory traffic. ``lax.scan`` walks chunks of T steps (default 8); inside a chunk the
decays exp(dt A) and inputs dt u B of all T steps are computed at once and the T steps are unrolled, on a
[N, channels] state (channels minor, so the exp, the update and the C-reduction are lane-parallel over channels;
every reduction is an einsum, which XLA:CPU runs far faster than multiply-then-sum). Nothing [B, L, D, N]-sized is
ever materialised. Backward is a ``jax.custom_vjp``: the forward keeps only the chunk-entry states; the backward
walks the chunks in reverse (``lax.scan(reverse=True)``), recomputes each chunk's states from its entry state and
runs the reverse recurrence g_t = C_t dy_t + exp(dt_{t+1} A) g_{t+1}, from which every input gradient is an
elementwise product or an einsum. Measured in one run (B4 L1024 D512 N16, jit, fwd / fwd+bwd ms): this form
(chunk 8) 61 / 187; jax.grad through the reference ``lax.scan`` 82 / 508, with ``unroll=`` 4, 8, 16: 81 / 462,
86 / 446, 62 / 600; a chunked ``lax.scan`` (T 16) with inner unrolled steps 70 / 1472 (``jax.checkpoint`` per chunk:
69 / 1646), with an inner ``lax.associative_scan`` 94 / 987 (checkpointed: 83 / 518); torch's fused C++ kernel
(2 threads) 19 / 79. XLA:CPU runs these per-chunk ops on one thread; the C++ kernel uses two.
Layout matters to XLA's fusion: materialising the decays/inputs through ``.at[0].add`` and the shifted decays
through a concatenation (as below) measured 2-4x faster than formulations XLA fused into recomputations.

Glossary of dimension letters:
    B: batch    D: channels (d_inner)    L: sequence length    N: state size    G: groups of B/C (D % G == 0)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._dispatch import choose

__all__ = ["selective_scan", "selective_scan_step", "reference", "chunk_selective_scan"]


def _acc_dtype(dtype) -> jnp.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _expand_groups(M: jax.Array, channels: int) -> jax.Array:
    """B_t or C_t of shape (B, N) or (B, G, N) -> broadcastable (B, D|1, N)."""
    if M.ndim == 2:
        return M[:, None, :]  # (B, 1, N)
    groups = M.shape[1]
    return jnp.repeat(M, channels // groups, axis=1)  # (B, D, N)


def _discretize_dt(delta: jax.Array, delta_bias, delta_softplus: bool) -> jax.Array:
    """delta (B, D, ...) plus bias (D,) broadcast along the channel dim, then optional softplus (fp32)."""
    dt = delta.astype(_acc_dtype(delta.dtype))
    if delta_bias is not None:
        shape = (-1,) + (1,) * (dt.ndim - 2)
        dt = dt + delta_bias.astype(dt.dtype).reshape(shape)
    return jax.nn.softplus(dt) if delta_softplus else dt


def selective_scan_step(state, u_t, delta_t, A, B_t, C_t, D=None, z_t=None, delta_bias=None,
                        delta_softplus=False):
    """One step of the recurrence; returns (y_t (B, D), new_state (B, D, N)).

    state (B, D, N) fp32; u_t, delta_t, z_t (B, D); A (D, N); B_t, C_t (B, N) or (B, G, N); D (D,).
    """
    acc = _acc_dtype(u_t.dtype)
    channels = u_t.shape[1]
    dt = _discretize_dt(delta_t, delta_bias, delta_softplus)  # (B, D)
    u = u_t.astype(acc)  # (B, D)
    dA = jnp.exp(dt[..., None] * A.astype(acc))  # (B, D, N)
    dBu = (dt * u)[..., None] * _expand_groups(B_t.astype(acc), channels)  # (B, D, N)
    new_state = dA * state.astype(acc) + dBu  # (B, D, N)
    y = (new_state * _expand_groups(C_t.astype(acc), channels)).sum(-1)  # (B, D)
    if D is not None:
        y = y + D.astype(acc) * u
    if z_t is not None:
        y = y * jax.nn.silu(z_t.astype(acc))
    return y.astype(u_t.dtype), new_state


def reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None):
    """Sequential oracle: ``lax.scan`` over time with an fp32 state. Returns (out (B, D, L), last_state (B, D, N))."""
    batch, channels, _ = u.shape
    acc = _acc_dtype(u.dtype)
    dt = _discretize_dt(delta, delta_bias, delta_softplus)  # (B, D, L)
    h = initial_state.astype(acc) if initial_state is not None else \
        jnp.zeros((batch, channels, A.shape[-1]), acc)  # (B, D, N)

    def cell(h, inputs):
        u_t, dt_t, B_t, C_t = inputs
        y_t, h = selective_scan_step(h, u_t, dt_t, A, B_t, C_t)
        return h, y_t  # (B, D, N), (B, D)

    time_major = [jnp.moveaxis(v, -1, 0) for v in (u.astype(acc), dt, B, C)]  # (L, ...)
    h, ys = lax.scan(cell, h, time_major)  # (B, D, N), (L, B, D)
    y = jnp.moveaxis(ys, 0, -1)  # (B, D, L)
    if D is not None:
        y = y + D.astype(acc)[:, None] * u.astype(acc)
    if z is not None:
        y = y * jax.nn.silu(z.astype(acc))
    return y.astype(u.dtype), h


def _steps(a, b):
    """h_t = a_t h_{t-1} + b_t along axis 0 from h_{-1} = 0, unrolled (T is small and static): stacked h_t."""
    hs = [b[0]]
    for t in range(1, a.shape[0]):
        hs.append(a[t] * hs[-1] + b[t])
    return jnp.stack(hs)


def _chunk_states(h_in, dt, u, A, B_c):
    """States of one chunk. h_in (B, G, N, E); dt, u (T, B, G, E); A (G, N, E); B_c (T, B, G, N).

    Returns (the decays exp(dt A) (T, B, G, N, E), the states after each step (T, B, G, N, E)).
    """
    dA = jnp.exp(dt[..., None, :] * A)  # (T, B, G, N, E)
    dBu = ((dt * u)[..., None, :] * B_c[..., None]).at[0].add(dA[0] * h_in)  # (T, B, G, N, E)
    return dA, _steps(dA, dBu)


def _scan_fwd(h0, dt, u, A, B, C):
    """Returns (y (c, T, B, G, E), last state (B, G, N, E), the states entering each chunk (c, B, G, N, E))."""
    def chunk(h, xs):
        dt_c, u_c, B_c, C_c = xs
        _, hs = _chunk_states(h, dt_c, u_c, A, B_c)  # (T, B, G, N, E)
        return hs[-1], (jnp.einsum("tbgne,tbgn->tbge", hs, C_c), h)

    h, (y, starts) = lax.scan(chunk, h0, (dt, u, B, C))
    return y, h, starts


@jax.custom_vjp
def _scan_chunks(h0, dt, u, A, B, C):
    """h0 (B, G, N, E); dt, u (c, T, B, G, E); A (G, N, E); B, C (c, T, B, G, N) -> (y (c, T, B, G, E), last state)."""
    y, h, _ = _scan_fwd(h0, dt, u, A, B, C)
    return y, h


def _scan_chunks_fwd(h0, dt, u, A, B, C):
    y, h, starts = _scan_fwd(h0, dt, u, A, B, C)
    return (y, h), (starts, dt, u, A, B, C)


def _scan_chunks_bwd(res, cotangents):
    """Reverse walk over chunks: recompute the chunk's states, then g_t = dL/dh_t by the reverse recurrence."""
    starts, dt, u, A, B, C = res
    dy, dh_last = cotangents

    def chunk(carry, xs):
        dh_next, dA_sum = carry  # (B, G, N, E): dL/dh at the chunk's end from later chunks; (G, N, E)
        h_in, dt_c, u_c, B_c, C_c, dy_c = xs
        dA, hs = _chunk_states(h_in, dt_c, u_c, A, B_c)  # (T, B, G, N, E)
        gy = (dy_c[..., None, :] * C_c[..., None]).at[-1].add(dh_next)  # (T, B, G, N, E)
        a_next = jnp.concatenate([dA[1:], jnp.ones_like(dA[:1])], axis=0)  # (T, B, G, N, E): dA_{t+1}
        g = _steps(a_next[::-1], gy[::-1])[::-1]  # (T, B, G, N, E): g_t = gy_t + dA_{t+1} g_{t+1}
        h_prev = jnp.concatenate([h_in[None], hs[:-1]], axis=0)  # (T, B, G, N, E)
        d_log = g * h_prev * dA  # (T, B, G, N, E): dL/d(dt A)
        gB = jnp.einsum("tbgne,tbgn->tbge", g, B_c)  # (T, B, G, E)
        d_dt = jnp.einsum("tbgne,gne->tbge", d_log, A) + gB * u_c  # (T, B, G, E)
        dB = jnp.einsum("tbgne,tbge->tbgn", g, dt_c * u_c)  # (T, B, G, N)
        dC = jnp.einsum("tbgne,tbge->tbgn", hs, dy_c)  # (T, B, G, N)
        dA_sum = dA_sum + (d_log * dt_c[..., None, :]).sum((0, 1))  # (G, N, E)
        return (dA[0] * g[0], dA_sum), (d_dt, gB * dt_c, dB, dC)

    (dh0, dA), (d_dt, du, dB, dC) = lax.scan(chunk, (dh_last, jnp.zeros_like(A)), (starts, dt, u, B, C, dy),
                                             reverse=True)
    return dh0, d_dt, du, dA, dB, dC


_scan_chunks.defvjp(_scan_chunks_fwd, _scan_chunks_bwd)


def _chunk_layout(v: jax.Array, T: int, pad: int) -> jax.Array:
    """(B, G, X, L) -> (c, T, B, G, X), time zero-padded by `pad` steps to c * T."""
    if pad:
        v = jnp.pad(v, [(0, 0)] * 3 + [(0, pad)])
    return v.reshape(v.shape[:3] + (v.shape[3] // T, T)).transpose(3, 4, 0, 1, 2)


def chunk_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         initial_state=None, *, chunk_size=8):
    """Chunked scan with a recomputing backward, same contract as `reference`; returns (out (B, D, L), last_state).

    Padded tail steps have dt = 0 (decay 1, no input), so they leave the last state unchanged.
    """
    batch, channels, length = u.shape
    N = A.shape[-1]
    acc = _acc_dtype(u.dtype)
    h0 = initial_state.astype(acc) if initial_state is not None else jnp.zeros((batch, channels, N), acc)
    if length == 0:
        return jnp.zeros((batch, channels, 0), u.dtype), h0
    dt = _discretize_dt(delta, delta_bias, delta_softplus)  # (B, D, L)
    ua = u.astype(acc)  # (B, D, L)
    Bg, Cg = (M.astype(acc)[:, None] if M.ndim == 3 else M.astype(acc) for M in (B, C))  # (B, G, N, L)
    G = Bg.shape[1]
    E = channels // G
    T = max(1, min(int(chunk_size), length))
    pad = -length % T
    dt4, u4 = (_chunk_layout(v.reshape(batch, G, E, length), T, pad) for v in (dt, ua))  # (c, T, B, G, E)
    y, h = _scan_chunks(h0.reshape(batch, G, E, N).swapaxes(-1, -2), dt4, u4,
                        A.astype(acc).reshape(G, E, N).swapaxes(-1, -2),
                        _chunk_layout(Bg, T, pad), _chunk_layout(Cg, T, pad))  # (c, T, B, G, E), (B, G, N, E)
    y = y.transpose(2, 3, 4, 0, 1).reshape(batch, channels, -1)[..., :length]  # (B, D, L)
    if D is not None:
        y = y + D.astype(acc)[:, None] * ua
    if z is not None:
        y = y * jax.nn.silu(z.astype(acc))
    return y.astype(u.dtype), h.swapaxes(-1, -2).reshape(batch, channels, N)


def _pallas(*args, **kwargs):
    """The Pallas GPU kernel (``pallas_selective_scan``), imported on first call; interpret mode on CPU."""
    from .pallas_selective_scan import pallas_selective_scan
    return pallas_selective_scan(*args, **kwargs)


def cpp(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None):
    """The fused C++ kernel torch uses, as an XLA custom call (``cpu_ffi``; compiled on first use). CPU only."""
    from . import cpu_ffi

    if cpu_ffi.load() is None:
        raise RuntimeError("the C++ selective scan kernel could not be built here; use impl='chunk'")
    return cpu_ffi.selective_scan_cpp(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)


_IMPLS = {"reference": reference, "chunk": chunk_selective_scan, "cpp": cpp, "pallas": _pallas}


def _auto(device: str = "cpu") -> str:
    """GPU: the Pallas kernel (on a GPU host, only if it lowers there; else the CPU choice). CPU: the C++ kernel as
    an XLA custom call when it builds (0.94x torch's time forward, B4 L1024 D512 N16), else chunk, the fastest
    XLA form measured (benchmarks/_jax_kernels.py)."""
    if device == "gpu":
        from .pallas_selective_scan import lowering_available
        if jax.default_backend() != "gpu" or lowering_available():
            return "pallas"
    from . import cpu_ffi

    return "cpp" if cpu_ffi.load() is not None else "chunk"


def _pick(impl: str):
    return choose("selective_scan", _IMPLS, impl, _auto(jax.default_backend()))


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, initial_state=None, impl="auto"):
    """mamba_ssm ``selective_scan_fn`` semantics.

    u, delta (B, D, L); A (D, N); B, C (B, N, L) or (B, G, N, L); D (D,); z (B, D, L); delta_bias (D,);
    initial_state (B, D, N). Returns out (B, D, L), or (out, last_state (B, D, N) fp32) if return_last_state.
    impl: "auto" (CPU: "cpp", else "chunk" when the C++ kernel cannot be built; GPU: "pallas"), "cpp", "chunk",
    "pallas" or "reference".
    """
    out, last_state = _pick(impl)(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    return (out, last_state) if return_last_state else out
