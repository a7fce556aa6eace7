"""The grouped matmul on CPU: rows padded per group to whole tiles of T rows (each tile then belongs to one group,
as megablox's `gmm`), and a loop over the tiles in use multiplying each by its group's weight once. The loop's trip
count is the number of tiles in use (data-dependent; the buffers have the static bound ceil(M/T) + min(G, M)), so
the work is the grouped product's plus at most one partial tile per group, never G times it. The backward
(`custom_vjp`) is the same loop: dx with the weights' transpose, dw[g] += dy_tile^T x_tile (megablox's `tgmm`).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def _tile(m: int, g: int) -> int:
    """Rows per tile: the average rows per used group, rounded up to a power of two in [8, 128]."""
    per, t = m // max(1, min(g, m)), 8
    while t < per and t < 128:
        t *= 2
    return t


def _layout(group_sizes, m: int, t: int):
    """(number of tiles nt (static), src (nt*T,) row of x per padded row (m: padding), dest (m,) padded position of
    each row (nt*T: a row past sum(group_sizes)), tile_group (nt,), tiles in use)."""
    g = group_sizes.shape[0]
    nt = -(-m // t) + min(g, m)
    gs = group_sizes.astype(jnp.int32)  # (G,)
    tiles = (gs + t - 1) // t  # (G,) tiles per group
    tile_end, row_end = jnp.cumsum(tiles), jnp.cumsum(gs)  # (G,)
    tile_group = jnp.minimum(jnp.searchsorted(tile_end, jnp.arange(nt), side="right"), g - 1)  # (nt,)
    pad_start, row_start = (tile_end - tiles) * t, row_end - gs  # (G,) first padded / first input row per group
    p = jnp.arange(nt * t)
    pg = tile_group[p // t]  # (nt*T,) group of each padded row
    off = p - pad_start[pg]
    src = jnp.where((off < gs[pg]) & (p // t < tile_end[-1]), row_start[pg] + off, m)
    rg = jnp.searchsorted(row_end, jnp.arange(m), side="right")  # (M,) group of each row (G: past the end)
    rgc = jnp.minimum(rg, g - 1)
    dest = jnp.where(rg < g, pad_start[rgc] + jnp.arange(m) - row_start[rgc], nt * t)
    return nt, src, dest, tile_group, tile_end[-1]


def _gmm(xp, w, tile_group, used, t: int, trans: bool):
    """Per tile i in use: xp[tile i] @ w[g_i].T (trans: @ w[g_i]). xp (nt*T, K) -> (nt*T, N)."""
    n = w.shape[2] if trans else w.shape[1]

    def body(i, out):
        xt = lax.dynamic_slice_in_dim(xp, i * t, t)  # (T, K)
        yt = lax.dot_general(xt, w[tile_group[i]], (((1,), (0 if trans else 1,)), ((), ())))  # (T, N)
        return lax.dynamic_update_slice_in_dim(out, yt.astype(out.dtype), i * t, 0)

    return lax.fori_loop(0, used, body, jnp.zeros((xp.shape[0], n), xp.dtype))


def _tgmm(xp, dyp, tile_group, used, t: int, g: int):
    """dw (G, N, K): dw[g_i] += dyp[tile i]^T @ xp[tile i], accumulated in fp32."""
    def body(i, dw):
        xt, dyt = lax.dynamic_slice_in_dim(xp, i * t, t), lax.dynamic_slice_in_dim(dyp, i * t, t)
        d = lax.dot_general(dyt, xt, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)  # (N, K)
        gi = tile_group[i]
        return lax.dynamic_update_index_in_dim(dw, dw[gi] + d, gi, 0)

    return lax.fori_loop(0, used, body, jnp.zeros((g, dyp.shape[1], xp.shape[1]), jnp.float32))


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _padded(xp, w, tile_group, used, t):
    return _gmm(xp, w, tile_group, used, t, False)


def _padded_fwd(xp, w, tile_group, used, t):
    return _gmm(xp, w, tile_group, used, t, False), (xp, w, tile_group, used)


def _padded_bwd(t, res, dyp):
    xp, w, tile_group, used = res
    dxp = _gmm(dyp, w, tile_group, used, t, True)
    dw = _tgmm(xp, dyp, tile_group, used, t, w.shape[0]).astype(w.dtype)
    return dxp, dw, None, None


_padded.defvjp(_padded_fwd, _padded_bwd)


def tiled_matmul(x, w, group_sizes):
    """x (M, K) sorted by group, w (G, N, K), group_sizes (G,) -> y (M, N)."""
    m = x.shape[0]
    t = _tile(m, w.shape[0])
    nt, src, dest, tile_group, used = _layout(group_sizes, m, t)
    xp = jnp.take(x, src, axis=0, mode="fill", fill_value=0)  # (nt*T, K) padded, zeros between groups
    yp = _padded(xp, w.astype(x.dtype), tile_group, used, t)  # (nt*T, N)
    return jnp.take(yp, dest, axis=0, mode="fill", fill_value=0)  # (M, N)
