"""Selective scan, the sequential reference (``impl="reference"``, the oracle) and the decoding step.

Per channel d and state index n (ZOH for A, Euler for B, as mamba_ssm's ``selective_scan_ref``):
    dt_t     = softplus(delta_t + delta_bias)            (if delta_softplus, else delta_t + delta_bias)
    h_t      = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t      = sum_n C_t * h_t + D * u_t
    out_t    = y_t * silu(z_t)                           (if z is given)

Glossary of dimension letters:
    B: batch    D: channels (d_inner)    L: sequence length    N: state size    G: groups of B/C (D % G == 0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_step", "reference"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp32, or fp64 when the inputs are fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _expand_groups(M: torch.Tensor, channels: int) -> torch.Tensor:
    """B_t or C_t of shape (B, N) or (B, G, N) -> broadcastable (B, D|1, N)."""
    if M.dim() == 2:
        return M[:, None, :]  # (B, 1, N)
    groups = M.shape[1]
    return M.repeat_interleave(channels // groups, dim=1)  # (B, D, N)


def _discretize_dt(delta: torch.Tensor, delta_bias, delta_softplus: bool) -> torch.Tensor:
    """delta (B, D, ...) plus bias (D,) broadcast along the channel dim, then optional softplus (fp32)."""
    dt = delta.to(_acc_dtype(delta.dtype))
    if delta_bias is not None:
        shape = (-1,) + (1,) * (dt.dim() - 2)
        dt = dt + delta_bias.to(dt.dtype).view(shape)
    return F.softplus(dt) if delta_softplus else dt


def selective_scan_step(state, u_t, delta_t, A, B_t, C_t, D=None, z_t=None, delta_bias=None,
                        delta_softplus=False):
    """One step of the recurrence; returns (y_t (B, D), new_state (B, D, N)). Does not mutate `state`.

    state (B, D, N) fp32; u_t, delta_t, z_t (B, D); A (D, N); B_t, C_t (B, N) or (B, G, N); D (D,).
    """
    acc = _acc_dtype(u_t.dtype)
    channels = u_t.shape[1]
    dt = _discretize_dt(delta_t, delta_bias, delta_softplus)  # (B, D)
    u = u_t.to(acc)  # (B, D)
    dA = torch.exp(dt[..., None] * A.to(acc))  # (B, D, N)
    dBu = (dt * u)[..., None] * _expand_groups(B_t.to(acc), channels)  # (B, D, N)
    new_state = torch.addcmul(dBu, dA, state.to(acc))  # (B, D, N): dA * state + dBu
    y = (new_state * _expand_groups(C_t.to(acc), channels)).sum(-1)  # (B, D)
    if D is not None:
        y = torch.addcmul(y, D.to(acc), u)
    if z_t is not None:
        y = y * F.silu(z_t.to(acc))
    return y.to(u_t.dtype), new_state


def reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None):
    """Sequential oracle: a Python loop over time with an fp32 state. Returns (out (B, D, L), last_state (B, D, N))."""
    batch, channels, length = u.shape
    acc = _acc_dtype(u.dtype)
    dt = _discretize_dt(delta, delta_bias, delta_softplus)  # (B, D, L)
    h = initial_state.to(acc) if initial_state is not None else \
        u.new_zeros(batch, channels, A.shape[-1], dtype=acc)  # (B, D, N)
    ys = []
    for t in range(length):
        y_t, h = selective_scan_step(h, u[..., t].to(acc), dt[..., t], A, B[..., t], C[..., t])
        ys.append(y_t)  # (B, D)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, channels, 0, dtype=acc)  # (B, D, L)
    if D is not None:
        y = y + D.to(acc)[:, None] * u.to(acc)
    if z is not None:
        y = y * F.silu(z.to(acc))
    return y.to(u.dtype), h
