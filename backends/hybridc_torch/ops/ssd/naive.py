"""SSD, the sequential reference (``impl="reference"``, the oracle) and the decoding step.

Per head h (heads share B/C within a group g = h // (H / G)):
    dt_t  = softplus(dt_t + dt_bias)  (if dt_softplus, else dt_t + dt_bias)
    S_t   = exp(dt_t * A_h) * S_{t-1} + dt_t * x_t B_t^T          S: (P, N)
    y_t   = S_t C_t + D_h * x_t
    out_t = y_t * silu(z_t)                                       (if z is given)
``chunk_size`` only matters to chunked/parallel implementations and is ignored here.

Glossary of dimension letters:
    B: batch    L: sequence length    H: heads    P: head dim    G: groups of B/C (H % G == 0)    N: state size
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ssd_step", "reference"]


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
