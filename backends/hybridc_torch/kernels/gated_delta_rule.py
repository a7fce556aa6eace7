"""The gated delta rule recurrence (Gated DeltaNet).

Paper: Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule" (2024, arXiv:2412.06464).
Reference implementation: flash-linear-attention, ``fla.ops.gated_delta_rule`` (``chunk_gated_delta_rule`` signature,
[B, T, H, K] layout; ``fla/ops/gated_delta_rule/naive.py::naive_recurrent_gated_delta_rule`` for the math).

Per head, with state S (K, V), log-space decay g_t (scalar per head) and one step t:
    S'  = exp(g_t) * S_{t-1}                          # (K, V)
    u_t = beta_t * (v_t - S'^T k_t)                   # (V,)
    S_t = S' + k_t u_t^T                              # (K, V)
    o_t = S_t^T (scale * q_t)                         # (V,)
No internal L2 normalisation or gate activation: the caller passes normalised q/k, g in log space, beta in (0, 1).

CPU: ``auto`` runs the fused sequential C++ kernel (``impl="cpp"``, ``selective_scan_cpu.delta_rule_cpp``;
2-5x the chunked form's speed, B4 L1024). GPU form (``impl="triton"``, what ``auto`` picks on CUDA when triton imports): ``triton_gated_delta_rule`` (Triton
kernels for ``chunk_delta_core``'s chunked form; its backward recomputes through ``chunk_delta_core``).

Dimension glossary:
    B batch, T time (sequence length), H heads, K key/query head dim, V value head dim.
"""
from __future__ import annotations

import torch

from . import _dispatch
from ._dispatch import choose

__all__ = ["gated_delta_rule", "gated_delta_rule_step", "reference", "chunk_gated_delta_rule"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: at least fp32 (fp64 inputs stay fp64)."""
    return torch.promote_types(dtype, torch.float32)


def gated_delta_rule_step(q_t, k_t, v_t, g_t, beta_t, state, scale=None):
    """One recurrence step. q_t, k_t (B, H, K); v_t (B, H, V); g_t, beta_t (B, H); state (B, H, K, V).

    Returns (o_t (B, H, V) in q_t's dtype, new state (B, H, K, V) in the accumulation dtype). Does not mutate state.
    """
    acc = _acc_dtype(q_t.dtype)
    scale = q_t.shape[-1] ** -0.5 if scale is None else scale
    q, k, v, g, beta = (t.to(acc) for t in (q_t, k_t, v_t, g_t, beta_t))
    S = state.to(acc) * g.exp()[..., None, None]                        # (B, H, K, V)
    u = beta[..., None] * (v - torch.einsum("bhk,bhkv->bhv", k, S))     # (B, H, V)
    S = S + k[..., :, None] * u[..., None, :]                           # (B, H, K, V)
    o = torch.einsum("bhk,bhkv->bhv", q * scale, S)                     # (B, H, V)
    return o.to(q_t.dtype), S


def reference(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
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
        o_t, S = gated_delta_rule_step(q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], S, scale)
        outs.append(o_t)                                                # (B, H, V)
    o = torch.stack(outs, dim=1) if T else v.new_zeros(B, 0, H, V)      # (B, T, H, V)
    return o.to(q.dtype), (S if output_final_state else None)


def _chunk_layout(x, C, pad):
    """(B, T, H, ...) -> (B, H, N, C, ...) with T zero-padded by `pad` steps to N*C."""
    x = x.transpose(1, 2)                                               # (B, H, T, ...)
    if pad:
        x = torch.cat([x, x.new_zeros(x.shape[:2] + (pad,) + x.shape[3:])], dim=2)
    return x.reshape(x.shape[:2] + (x.shape[2] // C, C) + x.shape[3:])


def unit_lower_inverse(n: torch.Tensor) -> torch.Tensor:
    """(I + n)^{-1} for strictly lower-triangular n (..., C, C), by recursive block doubling.

    With M = [[A, 0], [X, D]] the inverse is [[A^-1, 0], [-D^-1 X A^-1, D^-1]]: starting from the unit 1x1 blocks,
    each level merges neighbouring diagonal blocks with two batched matmuls (log2 C levels). Much faster on CPU than
    a batched triangular solve of many small systems, and plain matmuls for autograd. Only the strictly lower part
    of n is read.
    """
    C = n.shape[-1]
    P = 1 << max(C - 1, 0).bit_length()                                 # next power of two >= C
    if P != C:                                                          # identity padding keeps the inverse exact
        n = torch.nn.functional.pad(n, (0, P - C, 0, P - C))
    lead = n.shape[:-2]
    inv = torch.ones(lead + (P, 1, 1), dtype=n.dtype, device=n.device)  # (..., nb, s, s) diagonal-block inverses
    s = 1
    while s < P:
        nb = P // (2 * s)
        blocks = n.reshape(lead + (nb, 2 * s, nb, 2 * s)).diagonal(dim1=-4, dim2=-2)   # (..., 2s, 2s, nb)
        x = blocks.movedim(-1, -3)[..., s:, :s]                         # (..., nb, s, s) lower-left blocks
        a_inv, d_inv = inv[..., 0::2, :, :], inv[..., 1::2, :, :]       # (..., nb, s, s)
        low = -(d_inv @ x @ a_inv)                                      # (..., nb, s, s)
        top = torch.cat([a_inv, torch.zeros_like(a_inv)], dim=-1)       # (..., nb, s, 2s)
        bottom = torch.cat([low, d_inv], dim=-1)                        # (..., nb, s, 2s)
        inv = torch.cat([top, bottom], dim=-2)                          # (..., nb, 2s, 2s)
        s *= 2
    return inv[..., 0, :C, :C]


def chunk_delta_core(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size):
    """Chunked WY / UT-transform form of the (gated) delta rule; g None means no decay (plain delta rule).

    Inside a chunk of C steps (cumulative log decay G_i = g_1 + ... + g_i, pair decays exp(G_i - G_j), j <= i):
        (I + diag(beta) tril_strict(exp(G_i - G_j) k_i.k_j)) [U_v | W] = [beta v | beta exp(G) k]
    so the delta-rule updates of the chunk are U = U_v - W S0 (S0 the state entering the chunk), and
        O = (scale q exp(G)) S0 + tril(exp(G_i - G_j) scale q_i.k_j) U,
        S_C = exp(G_C) S0 + (k exp(G_C - G))^T U = (exp(G_C) I - kd^T W) S0 + kd^T U_v.
    Everything but the S0 products runs for all chunks at once (dense batched matmuls and a batched unit-triangular
    inverse by block doubling); only the state pass (one (K, K) x (K, V) matmul-add per chunk) is sequential.
    Padded tail steps have k = v = beta = 0 and g = 0, which leave the state unchanged. Autograd differentiates
    through it (measured: faster than fla's naive chunk form; the saved tensors are O(T (C + K + V)) per head plus
    one (K, V) state and one (K, K) transition per chunk).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    out_dtype, acc = q.dtype, _acc_dtype(q.dtype)
    scale = K ** -0.5 if scale is None else scale
    if initial_state is None:
        S = torch.zeros(B, H, K, V, dtype=acc, device=q.device)        # (B, H, K, V)
    else:
        S = initial_state.to(acc)                                       # (B, H, K, V)
    if T == 0:
        return q.new_zeros(B, 0, H, V), (S if output_final_state else None)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    C = min(int(chunk_size), T)
    pad = (-T) % C
    N = (T + pad) // C
    q, k, v = (_chunk_layout(t.to(acc), C, pad) for t in (q, k, v))     # (B, H, N, C, K|V)
    beta = _chunk_layout(beta.to(acc), C, pad)[..., None]               # (B, H, N, C, 1)
    kb = k * beta                                                       # (B, H, N, C, K)
    k_t = k.transpose(-1, -2)                                           # (B, H, N, K, C)
    mix = kb @ k_t                                                      # (B, H, N, C, C) beta_i k_i.k_j
    aqk = (q * scale) @ k_t                                             # (B, H, N, C, C) scale q_i.k_j
    if g is None:
        qg, kd, k_rhs = q * scale, k, kb
        aqk = aqk.tril()                                                # lower incl.
        decay_c = torch.ones((), dtype=acc, device=q.device)
    else:
        G = _chunk_layout(g.to(acc), C, pad).cumsum(-1)                 # (B, H, N, C) inclusive
        strict_upper = torch.triu(torch.ones(C, C, dtype=torch.bool, device=q.device), 1)
        dec = (G[..., :, None] - G[..., None, :]).masked_fill_(strict_upper, float("-inf")).exp_()  # e^{G_i-G_j}
        mix, aqk = mix * dec, aqk * dec                                 # lower (upper exactly 0)
        eG = G.exp()[..., None]                                         # (B, H, N, C, 1)
        qg, k_rhs = q * (scale * eG), kb * eG                           # (B, H, N, C, K)
        kd = k * (G[..., -1:] - G).exp()[..., None]                     # (B, H, N, C, K) exp(G_C - G_j) k_j
        decay_c = G[..., -1].exp()[..., None, None]                     # (B, H, N, 1, 1)
    t_inv = unit_lower_inverse(mix)                                     # reads the strictly lower part only
    u_v = t_inv @ (v * beta)                                            # (B, H, N, C, V)
    w = t_inv @ k_rhs                                                   # (B, H, N, C, K)
    # S_C = e^{G_C} S0 + kd^T (u_v - w S0) = trans S0 + inject: one (K, K) x (K, V) matmul-add per chunk.
    kd_t = kd.transpose(-1, -2)                                         # (B, H, N, K, C)
    trans = torch.eye(K, dtype=acc, device=q.device) * decay_c - kd_t @ w   # (B, H, N, K, K)
    inject = kd_t @ u_v                                                 # (B, H, N, K, V)
    starts = []
    # Per-chunk views via unbind (its backward is one stack, where indexing would zero-fill a full gradient per chunk).
    for tr, inj in zip(trans.unbind(2), inject.unbind(2)):              # sequential state pass
        starts.append(S)
        S = torch.baddbmm(inj.reshape(B * H, K, V), tr.reshape(B * H, K, K), S.reshape(B * H, K, V)).view(B, H, K, V)
    # O = qg S0 + aqk (u_v - w S0) = (qg - aqk w) S0 + aqk u_v
    o = (qg - aqk @ w) @ torch.stack(starts, dim=2) + aqk @ u_v        # (B, H, N, C, V)
    o = o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2).contiguous()  # (B, T, H, V), as the reference
    return o.to(out_dtype), (S if output_final_state else None)


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                           chunk_size=64):
    """Chunked gated delta rule (WY / UT-transform form, chunk 64 by default); same contract as ``reference``."""
    return chunk_delta_core(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size)


def _triton(*args, **kwargs):
    """The Triton GPU kernels (``triton_gated_delta_rule``), imported on first call (torch without triton imports)."""
    from .triton_gated_delta_rule import triton_gated_delta_rule
    return triton_gated_delta_rule(*args, **kwargs)


def cpp(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=None):
    """The fused sequential C++ kernel (``selective_scan_cpu.delta_rule_cpp``; CPU; `chunk_size` is ignored).

    [K, V] state in cache, loops along V, a checkpointed reverse scan for the backward: B4 L1024 H4 K64 V128
    19.6 / 114 ms fwd / fwd+bwd vs the chunked form's 74.9 / 199.7 ms (same run).
    """
    from . import selective_scan_cpu

    if selective_scan_cpu.load() is None:
        raise RuntimeError("the C++ CPU kernels are unavailable here; use impl='chunk'")
    return selective_scan_cpu.delta_rule_cpp(q, k, v, g, beta, scale, initial_state, output_final_state)


def _auto(device) -> str:
    """CPU: the C++ kernel when it builds, else "chunk"; "triton" on CUDA when triton imports; else the reference."""
    kind = torch.device(device).type
    if kind == "cpu":
        from . import selective_scan_cpu

        return "cpp" if selective_scan_cpu.load() is not None else "chunk"
    return "triton" if kind == "cuda" and _dispatch.triton_available() else "reference"


_IMPLS = {"reference": reference, "chunk": chunk_gated_delta_rule, "cpp": cpp, "triton": _triton}


def _pick(impl: str, x: torch.Tensor):
    """"auto": the C++ kernel on CPU tensors (the chunked form if it cannot be built), the Triton kernels on CUDA
    (when triton imports), else the reference."""
    return choose("gated_delta_rule", _IMPLS, impl, _auto(x.device))


def gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, *, impl="auto",
                     chunk_size=None):
    """Gated delta rule over a sequence, as fla's ``chunk_gated_delta_rule`` (no in-kernel l2norm/gate/sigmoid).

    q, k (B, T, H, K); v (B, T, H, V); g (B, T, H) log decay; beta (B, T, H); scale defaults to K**-0.5;
    initial_state (B, H, K, V) or None. Returns (o (B, T, H, V), final_state (B, H, K, V) or None).
    impl: "auto" (C++ on CPU, else chunked; Triton on CUDA), "reference", "chunk", "cpp" or "triton"; chunk_size
    (None = the impl's default) is ignored by the reference and the C++ kernel.
    """
    fn = _pick(impl, q)
    extra = {} if chunk_size is None or fn is reference else {"chunk_size": chunk_size}
    return fn(q, k, v, g, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              **extra)
