"""SSD: the scalar-decay state space recurrence of Mamba-2.

Paper: Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space
Duality" (ICML 2024), Sec. 6-7. Reference implementation: mamba_ssm ``mamba_chunk_scan_combined``
(mamba_ssm/ops/triton/ssd_combined.py; its ``ssd_minimal_discrete`` gives the chunked form) and transformers'
``mamba2_chunk_scan`` (models/mamba2/modeling_mamba2.py). The reference here is the sequential recurrence;
``chunk_size`` only matters to chunked/parallel implementations and is ignored by it.

Fast form (``impl="chunk"``, what ``auto`` picks on CPU): the SSD chunked algorithm (paper Sec. 6). With the
log-decays a_t = dt_t A_h and their within-chunk cumulative sums g_t (log space; decays only ever as exp of
differences g_t - g_s <= 0, never divisions by cumulative products), for each chunk of T steps:
    intra   y_t  = sum_{s<=t} (C_t . B_s) exp(g_t - g_s) dt_s x_s          (masked T x T matmuls)
    states  S_c  = sum_s exp(g_T - g_s) dt_s x_s B_s^T                      (P x N per chunk and head)
    passing S_in(c+1) = exp(g_T(c)) S_in(c) + S_c                          (short sequential loop over chunks)
    inter   y_t += exp(g_t) C_t . S_in(c)
fp32 accumulation; torch autograd differentiates it (the T x T intermediates are per chunk, O(L T) memory).

Per head h (heads share B/C within a group g = h // (H / G)):
    dt_t  = softplus(dt_t + dt_bias)  (if dt_softplus, else dt_t + dt_bias)
    S_t   = exp(dt_t * A_h) * S_{t-1} + dt_t * x_t B_t^T          S: (P, N)
    y_t   = S_t C_t + D_h * x_t
    out_t = y_t * silu(z_t)                                       (if z is given)

GPU form (``impl="triton"``, what ``auto`` picks on CUDA when triton imports): ``triton_ssd`` (Triton kernels
for the same chunked algorithm; its backward recomputes through ``chunk_ssd``).

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups of B/C (H % G == 0)    N: state size
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _dispatch
from ._dispatch import choose

__all__ = ["ssd", "ssd_step", "reference"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _heads_from_groups(M: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., G, N) -> (..., H, N): head h reads group h // (H / G)."""
    return M.repeat_interleave(heads // M.shape[-2], dim=-2)


def _discretize_dt(dt: torch.Tensor, dt_bias, dt_softplus: bool) -> torch.Tensor:
    """dt (..., H) plus bias (H,), then optional softplus, in the accumulation dtype."""
    dt = dt.to(_acc_dtype(dt.dtype))
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    return F.softplus(dt) if dt_softplus else dt


def _skip(D: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """D (H,) or (H, P) times x (..., H, P)."""
    D = D.to(x.dtype)
    return (D[:, None] if D.dim() == 1 else D) * x


def ssd_step(state, x_t, dt_t, A, B_t, C_t, D=None, z_t=None, dt_bias=None, dt_softplus=False):
    """One step; returns (y_t (B, H, P), new_state (B, H, P, N)). Does not mutate `state`.

    state (B, H, P, N) fp32; x_t, z_t (B, H, P); dt_t (B, H); A (H,); B_t, C_t (B, G, N); D (H,) or (H, P).
    """
    acc = _acc_dtype(x_t.dtype)
    heads = x_t.shape[1]
    dt = _discretize_dt(dt_t, dt_bias, dt_softplus)  # (B, H)
    x = x_t.to(acc)  # (B, H, P)
    B_h = _heads_from_groups(B_t.to(acc), heads)  # (B, H, N)
    C_h = _heads_from_groups(C_t.to(acc), heads)  # (B, H, N)
    decay = torch.exp(dt * A.to(acc))[..., None, None]  # (B, H, 1, 1)
    new_state = decay * state.to(acc) + (dt[..., None] * x)[..., None] * B_h[:, :, None, :]  # (B, H, P, N)
    y = torch.einsum("bhpn,bhn->bhp", new_state, C_h)  # (B, H, P)
    if D is not None:
        y = y + _skip(D, x)
    if z_t is not None:
        y = y * F.silu(z_t.to(acc))
    return y.to(x_t.dtype), new_state


def reference(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False):
    """Sequential oracle (Python loop over time, fp32 state). Returns (y (B, L, H, P), final_states (B, H, P, N))."""
    batch, length, heads, head_dim = x.shape
    acc = _acc_dtype(x.dtype)
    dt = _discretize_dt(dt, dt_bias, dt_softplus)  # (B, L, H)
    S = initial_states.to(acc) if initial_states is not None else \
        x.new_zeros(batch, heads, head_dim, B.shape[-1], dtype=acc)  # (B, H, P, N)
    ys = []
    for t in range(length):
        y_t, S = ssd_step(S, x[:, t].to(acc), dt[:, t], A, B[:, t], C[:, t])
        ys.append(y_t)  # (B, H, P)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(batch, 0, heads, head_dim, dtype=acc)  # (B, L, H, P)
    if D is not None:
        y = y + _skip(D, x.to(acc))
    if z is not None:
        y = y * F.silu(z.to(acc))
    return y.to(x.dtype), S


def chunk_ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False):
    """Chunked SSD, same contract as `reference`; ``chunk_size`` (T) is honoured. Returns (y, final_states)."""
    batch, length, heads, head_dim = x.shape
    groups, state = B.shape[-2], B.shape[-1]
    acc = _acc_dtype(x.dtype)
    xa = x.to(acc)
    dt = _discretize_dt(dt, dt_bias, dt_softplus)  # (B, L, H)
    S0 = initial_states.to(acc) if initial_states is not None else None  # (B, H, P, N)
    if length == 0:
        y = xa.new_zeros(batch, 0, heads, head_dim)
        final = S0 if S0 is not None else xa.new_zeros(batch, heads, head_dim, state)
        return y.to(x.dtype), final
    T = max(1, min(int(chunk_size), length))
    nc = -(-length // T)
    pad = nc * T - length
    hg = heads // groups  # heads per group
    Bm, Cm = B.to(acc), C.to(acc)
    xdt = xa * dt[..., None]  # (B, L, H, P)
    la = dt * A.to(acc)  # (B, L, H) log-decays (<= 0 for A < 0)
    if pad:  # trailing padding: zero input and zero log-decay leave real outputs and the final state unchanged
        xdt = F.pad(xdt, (0, 0, 0, 0, 0, pad))
        la = F.pad(la, (0, 0, 0, pad))
        Bm = F.pad(Bm, (0, 0, 0, 0, 0, pad))
        Cm = F.pad(Cm, (0, 0, 0, 0, 0, pad))
    # chunked layouts; heads split as (G, hg) so B/C are shared without repeat_interleave
    xdt = xdt.reshape(batch, nc, T, groups, hg, head_dim).permute(0, 1, 3, 4, 2, 5)  # (B, c, G, hg, T, P)
    Bc = Bm.reshape(batch, nc, T, groups, state).transpose(2, 3)  # (B, c, G, T, N)
    Cc = Cm.reshape(batch, nc, T, groups, state).transpose(2, 3)  # (B, c, G, T, N)
    g = la.reshape(batch, nc, T, groups, hg).permute(0, 1, 3, 4, 2).cumsum(-1)  # (B, c, G, hg, T)
    g_last = g[..., -1:]  # (B, c, G, hg, 1)
    # intra-chunk (diagonal blocks): masked decay-weighted "attention"
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    seg = g[..., :, None] - g[..., None, :]  # (B, c, G, hg, T, T): g_t - g_s
    scores = Cc @ Bc.transpose(-1, -2)  # (B, c, G, T, T): C_t . B_s
    if torch.is_grad_enabled() and seg.requires_grad:
        decay = torch.where(causal, seg, torch.full_like(seg, -torch.inf)).exp()
        y = (decay * scores[:, :, :, None]) @ xdt  # (B, c, G, hg, T, P)
    else:  # inference: the same in place, one (B, c, G, hg, T, T) buffer instead of four
        decay = seg.masked_fill_(~causal, -torch.inf).exp_().mul_(scores[:, :, :, None])
        y = decay @ xdt  # (B, c, G, hg, T, P)
    # per-chunk states from a zero start: S_c = sum_s exp(g_T - g_s) xdt_s B_s^T
    w = torch.exp(g_last - g)  # (B, c, G, hg, T)
    states = (xdt * w[..., None]).transpose(-1, -2) @ Bc[:, :, :, None]  # (B, c, G, hg, P, N)
    # inter-chunk state passing (sequential over chunks)
    chunk_decay = torch.exp(g_last[..., 0])  # (B, c, G, hg)
    S = S0.reshape(batch, groups, hg, head_dim, state) if S0 is not None else None
    starts = []
    for c in range(nc):
        starts.append(S)
        S = states[:, c] if S is None else chunk_decay[:, c, ..., None, None] * S + states[:, c]
    if S0 is None:
        starts[0] = torch.zeros_like(states[:, 0])
    S_in = torch.stack(starts, dim=1)  # (B, c, G, hg, P, N)
    # contribution of the entering state: exp(g_t) C_t . S_in
    y = y + torch.exp(g)[..., None] * (Cc[:, :, :, None] @ S_in.transpose(-1, -2))  # (B, c, G, hg, T, P)
    y = y.permute(0, 1, 4, 2, 3, 5).reshape(batch, nc * T, heads, head_dim)[:, :length]  # (B, L, H, P)
    if D is not None:
        y = y + _skip(D, xa)
    if z is not None:
        y = y * F.silu(z.to(acc))
    return y.to(x.dtype), S.reshape(batch, heads, head_dim, state)


def _triton(*args, **kwargs):
    """The Triton GPU kernels (``triton_ssd``), imported on first call so that torch without triton still imports."""
    from .triton_ssd import triton_ssd
    return triton_ssd(*args, **kwargs)


_IMPLS = {"reference": reference, "chunk": chunk_ssd, "triton": _triton}
_AUTO_CPU = "chunk"


def _auto(device: torch.device | str) -> str:
    """"chunk" on CPU, "triton" on CUDA when triton imports, the reference otherwise."""
    kind = torch.device(device).type
    if kind == "cpu":
        return _AUTO_CPU
    return "triton" if kind == "cuda" and _dispatch.triton_available() else "reference"


def _pick(impl: str, device: torch.device | str = "cpu"):
    return choose("ssd", _IMPLS, impl, _auto(device))


def ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, dt_softplus=False,
        return_final_states=False, *, impl="auto"):
    """mamba_ssm ``mamba_chunk_scan_combined`` semantics (dt_limit fixed to (0, inf)).

    x (B, L, H, P); dt (B, L, H); A (H,); B, C (B, L, G, N); D (H,) or (H, P); z (B, L, H, P); dt_bias (H,);
    initial_states (B, H, P, N). Returns y (B, L, H, P), or (y, final_states (B, H, P, N) fp32).
    """
    y, final = _pick(impl, x.device)(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, dt_softplus)
    return (y, final) if return_final_states else y
