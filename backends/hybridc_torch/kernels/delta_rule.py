"""The delta rule recurrence (DeltaNet).

Paper: Schlag et al., "Linear Transformers Are Secretly Fast Weight Programmers" (2021, arXiv:2102.11174);
Yang et al., "Parallelizing Linear Transformers with the Delta Rule over Sequence Length" (2024, arXiv:2406.06484).
Reference implementation: flash-linear-attention, ``fla.ops.delta_rule`` (``chunk_delta_rule`` signature and
[B, T, H, K] layout; ``fla/ops/delta_rule/naive.py::delta_rule_recurrence`` for the math).

Per head, with state S (K, V) and one step t:
    u_t = beta_t * (v_t - S_{t-1}^T k_t)            # (V,)
    S_t = S_{t-1} + k_t u_t^T                        # (K, V)
    o_t = S_t^T (scale * q_t)                        # (V,)
No internal L2 normalisation: the caller normalises q and k.

CPU: ``auto`` runs the fused sequential C++ kernel (``impl="cpp"``, ``selective_scan_cpu.delta_rule_cpp``;
2-5x the chunked form's speed, B4 L1024). GPU form (``impl="triton"``, what ``auto`` picks on CUDA when triton imports): the gated delta rule's Triton kernels
with g = 0 (``triton_gated_delta_rule.triton_delta_rule``).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

import torch

from .gated_delta_rule import _auto as gated_auto
from .gated_delta_rule import chunk_delta_core
from .gated_delta_rule import cpp as gated_cpp
from ._dispatch import choose

__all__ = ["delta_rule", "delta_rule_step", "reference", "chunk_delta_rule"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: at least fp32 (fp64 inputs stay fp64)."""
    return torch.promote_types(dtype, torch.float32)


def delta_rule_step(q_t, k_t, v_t, beta_t, state, scale=None):
    """One recurrence step. q_t, k_t (B, H, K); v_t (B, H, V); beta_t (B, H); state (B, H, K, V).

    Returns (o_t (B, H, V) in q_t's dtype, new state (B, H, K, V) in the accumulation dtype). Does not mutate state.
    """
    acc = _acc_dtype(q_t.dtype)
    scale = q_t.shape[-1] ** -0.5 if scale is None else scale
    q, k, v, beta = (t.to(acc) for t in (q_t, k_t, v_t, beta_t))
    S = state.to(acc)                                                   # (B, H, K, V)
    u = beta[..., None] * (v - torch.einsum("bhk,bhkv->bhv", k, S))     # (B, H, V)
    S = S + k[..., :, None] * u[..., None, :]                           # (B, H, K, V)
    o = torch.einsum("bhk,bhkv->bhv", q * scale, S)                     # (B, H, V)
    return o.to(q_t.dtype), S


def reference(q, k, v, beta, scale=None, initial_state=None, output_final_state=False):
    """Sequential oracle: a Python loop over time with fp32 (or wider) state accumulation."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    acc = _acc_dtype(q.dtype)
    if initial_state is None:
        S = torch.zeros(B, H, K, V, dtype=acc, device=q.device)        # (B, H, K, V)
    else:
        S = initial_state.to(acc)                                       # (B, H, K, V)
    outs = []
    for t in range(T):
        o_t, S = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], S, scale)
        outs.append(o_t)                                                # (B, H, V)
    o = torch.stack(outs, dim=1) if T else v.new_zeros(B, 0, H, V)      # (B, T, H, V)
    return o.to(q.dtype), (S if output_final_state else None)


def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=64):
    """Chunked delta rule (WY / UT-transform form, chunk 64 by default); same contract as ``reference``.

    Shares its core with the gated delta rule (``gated_delta_rule.chunk_delta_core`` with no decay).
    """
    return chunk_delta_core(q, k, v, None, beta, scale, initial_state, output_final_state, chunk_size)


def _triton(*args, **kwargs):
    """The Triton GPU kernels (the gated ones with g = 0), imported on first call (torch without triton imports)."""
    from .triton_gated_delta_rule import triton_delta_rule
    return triton_delta_rule(*args, **kwargs)


def cpp(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=None):
    """The gated delta rule's fused C++ kernel with no gate (``gated_delta_rule.cpp``; CPU; `chunk_size` ignored)."""
    return gated_cpp(q, k, v, None, beta, scale, initial_state, output_final_state)


_IMPLS = {"reference": reference, "chunk": chunk_delta_rule, "cpp": cpp, "triton": _triton}
_auto = gated_auto  # the same choice as the gated delta rule: cpp / chunk on CPU, triton on CUDA, else reference


def _pick(impl: str, x: torch.Tensor):
    """"auto": the C++ kernel on CPU tensors (the chunked form if it cannot be built), the Triton kernels on CUDA
    (when triton imports), else the reference."""
    return choose("delta_rule", _IMPLS, impl, _auto(x.device))


def delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False, *, impl="auto",
               chunk_size=None):
    """Delta rule over a sequence, as fla's ``chunk_delta_rule`` (without in-kernel l2norm).

    q, k (B, T, H, K); v (B, T, H, V); beta (B, T, H); scale defaults to K**-0.5;
    initial_state (B, H, K, V) or None. Returns (o (B, T, H, V), final_state (B, H, K, V) or None).
    impl: "auto" (C++ on CPU, else chunked; Triton on CUDA), "reference", "chunk", "cpp" or "triton"; chunk_size
    (None = the impl's default) is ignored by the reference and the C++ kernel.
    """
    fn = _pick(impl, q)
    extra = {} if chunk_size is None or fn is reference else {"chunk_size": chunk_size}
    return fn(q, k, v, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              **extra)
