"""The grouped matmul on CPU: a loop over visits, a visit being up to T consecutive rows of one group (megablox's
`gmm` tiles, without padding the rows): the T rows from the visit's first row are multiplied by the group's weight and
written back where they belong to the visit (rows past it keep what they hold; a visit near the end reads the last T
rows). The loop's trip count is the number of visits, sum_g ceil(n_g / T) <= ceil(M/T) + min(G, M) (data-dependent;
the visit table has that static bound), so the work is the grouped product's plus at most one partial tile per
group, never G times it, and nothing is gathered or padded. The backward (`custom_vjp`) is the same loop: dx with the
weights' transpose, dw[g] += dy_visit^T x_visit (megablox's `tgmm`), rows outside the visit masked out.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def _tile(m: int, g: int) -> int:
    """Rows per visit: the average rows per used group, rounded up to a power of two in [8, 128], at most M."""
    per, t = m // max(1, min(g, m)), 8
    while t < per and t < 128:
        t *= 2
    return max(1, min(t, m))


def _visits(group_sizes, m: int, t: int):
    """(group (V,), first row (V,), rows (V,) of each visit, visits in use); V = ceil(M/T) + min(G, M) (static)."""
    g = group_sizes.shape[0]
    nv = -(-m // t) + min(g, m)
    gs = group_sizes.astype(jnp.int32)  # (G,)
    chunks = (gs + t - 1) // t  # (G,) visits per group
    vend = jnp.cumsum(chunks)  # (G,)
    vg = jnp.minimum(jnp.searchsorted(vend, jnp.arange(nv), side="right"), g - 1)  # (V,)
    vc = jnp.arange(nv) - (vend - chunks)[vg]  # (V,) visit index within its group
    start = (jnp.cumsum(gs) - gs)[vg] + vc * t  # (V,)
    return vg, start, jnp.minimum(t, gs[vg] - vc * t), vend[-1]


def _window(x, start, end, t: int):
    """The T-row window of x from row `start` (the last T rows when fewer are left) -> (its first row, the window,
    which of its rows lie in [start, end) (T,))."""
    s = jnp.minimum(start, x.shape[0] - t)
    r = s + jnp.arange(t)
    return s, lax.dynamic_slice_in_dim(x, s, t), (r >= start) & (r < end)


def _frame(i, x, visits, t: int):
    """Visit i: (its T-row window's first row, the window of x, which window rows are the visit's (T,))."""
    _, start, rows, _ = visits
    return _window(x, start[i], start[i] + rows[i], t)


def _gmm(x, w, visits, t: int, trans: bool):
    """Per visit i of group g: x[rows] @ w[g].T (trans: @ w[g]). x (M, K) -> (M, N); rows of no visit give 0."""
    n = w.shape[2] if trans else w.shape[1]

    def body(i, out):
        s, xt, mine = _frame(i, x, visits, t)  # (T, K)
        yt = lax.dot_general(xt, w[visits[0][i]], (((1,), (0 if trans else 1,)), ((), ())))  # (T, N)
        kept = lax.dynamic_slice_in_dim(out, s, t)
        return lax.dynamic_update_slice_in_dim(out, jnp.where(mine[:, None], yt.astype(out.dtype), kept), s, 0)

    return lax.fori_loop(0, visits[3], body, jnp.zeros((x.shape[0], n), x.dtype))


def _tgmm(x, dy, visits, t: int, g: int):
    """dw (G, N, K): dw[g_i] += dy[visit i]^T @ x[visit i], accumulated in fp32."""
    def body(i, dw):
        s, xt, mine = _frame(i, x, visits, t)
        dyt = jnp.where(mine[:, None], lax.dynamic_slice_in_dim(dy, s, t), 0)  # (T, N)
        d = lax.dot_general(dyt, xt, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)  # (N, K)
        gi = visits[0][i]
        return lax.dynamic_update_index_in_dim(dw, dw[gi] + d, gi, 0)

    return lax.fori_loop(0, visits[3], body, jnp.zeros((g, dy.shape[1], x.shape[1]), jnp.float32))


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _grouped(x, w, visits, t):
    return _gmm(x, w, visits, t, False)


def _grouped_fwd(x, w, visits, t):
    return _gmm(x, w, visits, t, False), (x, w, visits)


def _grouped_bwd(t, res, dy):
    x, w, visits = res
    dx = _gmm(dy, w, visits, t, True)
    dw = _tgmm(x, dy, visits, t, w.shape[0]).astype(w.dtype)
    return dx, dw, None


_grouped.defvjp(_grouped_fwd, _grouped_bwd)


def tiled_ffn(x, rows, scale, w_in, w_out, group_sizes, act):
    """Forward only: both products of each visit while its rows are in cache. Sorted slot m (of group g, token
    rows[m], weight scale[m]) adds scale[m] * w_out[g] @ act(w_in[g] @ x[rows[m]]) to y[rows[m]]: x (T, D),
    rows, scale (M,), w_in (G, H, D), w_out (G, N, F), act (..., H) -> (..., F) => y (T, N). A loop over the
    non-empty groups (each group's weights sliced once), inside it a loop over the group's visits: each gathers its
    T rows of x and scatter-adds its outputs (window rows outside the group add zeros)."""
    m, t = rows.shape[0], _tile(rows.shape[0], w_in.shape[0])
    gs = group_sizes.astype(jnp.int32)  # (G,)
    used = jnp.nonzero(gs > 0, size=min(w_in.shape[0], m), fill_value=0)[0]  # (U,) the non-empty groups
    first = jnp.cumsum(gs) - gs  # (G,) each group's first row
    w_in, w_out = w_in.astype(x.dtype), w_out.astype(x.dtype)

    def group(j, y):
        g = used[j]
        wi, wo, start, end = w_in[g], w_out[g], first[g], first[g] + gs[g]  # (H, D), (N, F)

        def visit(c, y):
            s, tok, mine = _window(rows, start + c * t, end, t)  # (T,) tokens of the visit's window
            st = jnp.where(mine, lax.dynamic_slice_in_dim(scale, s, t), 0).astype(x.dtype)  # (T,)
            h = act(lax.dot_general(x[tok], wi, (((1,), (1,)), ((), ()))))  # (T, F)
            yt = lax.dot_general(h * st[:, None], wo, (((1,), (1,)), ((), ())))  # (T, N)
            return y.at[tok].add(yt, mode="promise_in_bounds")

        return lax.fori_loop(0, (gs[g] + t - 1) // t, visit, y)

    return lax.fori_loop(0, jnp.count_nonzero(gs), group, jnp.zeros((x.shape[0], w_out.shape[1]), x.dtype))


def tiled_matmul(x, w, group_sizes):
    """x (M, K) sorted by group, w (G, N, K), group_sizes (G,) -> y (M, N)."""
    t = _tile(x.shape[0], w.shape[0])
    return _grouped(x, w.astype(x.dtype), _visits(group_sizes, x.shape[0], t), t)
