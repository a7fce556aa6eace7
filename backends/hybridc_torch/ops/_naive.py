"""What the delta-rule family's sequential references share (delta rule, gated delta rule, RWKV-7): the fp32 state
and the loop over time that calls one op's step function. Each op's recurrence itself stays in its ``naive.py``."""
from __future__ import annotations

import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: at least fp32 (fp64 inputs stay fp64)."""
    return torch.promote_types(dtype, torch.float32)


def run_steps(step, xs, v_dim: int, scale, initial_state=None, output_final_state=False):
    """Sequential oracle: a Python loop over time with an fp32 (or wider) state S (B, H, K, V).

    xs: the per-step inputs, each (B, T, H, .), the first of them (q or r) setting B, T, H, K and the output dtype;
    ``step(*x_t, S, scale) -> (o_t (B, H, V), S)``. Returns (o (B, T, H, V), S or None)."""
    first = xs[0]
    B, T, H, K = first.shape
    acc = acc_dtype(first.dtype)
    if initial_state is None:
        S = torch.zeros(B, H, K, v_dim, dtype=acc, device=first.device)  # (B, H, K, V)
    else:
        S = initial_state.to(acc)                                         # (B, H, K, V)
    outs = []
    for t in range(T):
        o_t, S = step(*(x[:, t] for x in xs), S, scale)
        outs.append(o_t)                                                  # (B, H, V)
    o = torch.stack(outs, dim=1) if T else first.new_zeros(B, 0, H, v_dim)  # (B, T, H, V)
    return o.to(first.dtype), (S if output_final_state else None)
