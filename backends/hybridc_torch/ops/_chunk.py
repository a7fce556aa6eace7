"""What the chunked delta-rule forms share (the gated delta rule's WY / UT form, RWKV-7's DPLR form): the opening
(state, empty sequence, chunk grid), the [B, T, H, ...] -> [B, H, N, C, ...] layout, the unit-lower-triangular
inverse and the sequential state pass between chunks.

Every chunked form here: the sequence of T steps is zero-padded to N chunks of C = min(chunk_size, T) steps (padded
steps leave the state unchanged), everything inside a chunk runs as batched matmuls for all chunks at once, and only
the state pass (one (K, K) x (K, V) matmul-add per chunk) is sequential.

Dimension glossary:
    B batch, T time (sequence length), H heads, K key head dim, V value head dim, N chunks, C chunk size.
"""
from __future__ import annotations

import torch

__all__ = ["start_state", "empty_sequence", "chunk_grid", "chunk_layout", "unit_lower_inverse", "state_pass",
           "from_chunks"]


def start_state(q, V: int, initial_state, acc: torch.dtype) -> torch.Tensor:
    """The state entering the first chunk: `initial_state` in the accumulation dtype, or zeros (B, H, K, V)."""
    if initial_state is None:
        B, _, H, K = q.shape
        return torch.zeros(B, H, K, V, dtype=acc, device=q.device)     # (B, H, K, V)
    return initial_state.to(acc)                                        # (B, H, K, V)


def empty_sequence(q, V: int, S, output_final_state: bool):
    """The result for T == 0: an empty output (B, 0, H, V) in q's dtype and the state unchanged (or None)."""
    B, _, H, _ = q.shape
    return q.new_zeros(B, 0, H, V), (S if output_final_state else None)


def chunk_grid(T: int, chunk_size) -> tuple[int, int, int]:
    """(C, pad, N): the chunk length min(chunk_size, T), the zero padding of T to N*C steps, the number of chunks."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    C = min(int(chunk_size), T)
    pad = (-T) % C
    return C, pad, (T + pad) // C


def chunk_layout(x, C, pad):
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


def state_pass(S, trans, inject):
    """The sequential pass S <- trans_c S + inject_c over the chunks.

    S (B, H, K, V) entering the first chunk; trans (B, H, N, K, K); inject (B, H, N, K, V).
    Returns (the states entering each chunk (B, H, N, K, V), the final state (B, H, K, V)).
    """
    B, H, K, V = S.shape
    starts = []
    # Per-chunk views via unbind (its backward is one stack, where indexing would zero-fill a full gradient per chunk).
    for tr, inj in zip(trans.unbind(2), inject.unbind(2)):
        starts.append(S)
        S = torch.baddbmm(inj.reshape(B * H, K, V), tr.reshape(B * H, K, K), S.reshape(B * H, K, V)).view(B, H, K, V)
    return torch.stack(starts, dim=2), S


def from_chunks(o, T: int):
    """(B, H, N, C, V) -> (B, T, H, V) contiguous, the padding dropped (the references' layout)."""
    B, H, N, C, V = o.shape
    return o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2).contiguous()
