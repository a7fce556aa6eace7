"""The experts' FFN of a mixture of experts on token-slots grouped by expert: x (T, D), the S = T*K slots
s = t*K + k, `order` (S,) the slots sorted by group (expert), `scale` (S,) each sorted slot's routing weight:

    y[t] = sum over t's slots m (group g): scale[m] * w_out[g] @ act(w_in[g] @ x[t])        -> (T, N)

``composed``: two grouped matmuls (any implementation) on the gathered rows, un-sorted by a gather and summed over
K: differentiable (the tiled matmul's own backward). ``fused`` (CPU, with the tiled matmul): ``tiled.tiled_ffn``,
both products per visit while its rows are in cache, the outputs scatter-added (no (S, 2F) / (S, D) buffers, no
gathers of S rows); it is the primal only: under differentiation the composed form runs (a ``custom_vjp`` whose
forward is the composed form's ``jax.vjp``), so gradients cost what they did.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .tiled import tiled_ffn


def composed(x, order, scale, w_in, w_out, group_sizes, act, matmul):
    """x (T, D), order, scale (S,), w_in (G, H, D), w_out (G, N, F), group_sizes (G,) -> y (T, N); matmul: a
    grouped matmul (x, w, group_sizes)."""
    k = order.shape[0] // x.shape[0]
    h = act(matmul(x[order // k], w_in, group_sizes)) * scale[:, None].astype(x.dtype)  # (S, F), sorted
    ys = matmul(h, w_out, group_sizes)  # (S, N), sorted
    at = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]), unique_indices=True)  # slot -> sorted row
    return ys[at].reshape(x.shape[0], k, -1).sum(axis=1)  # (T, N)


def fused(x, order, scale, w_in, w_out, group_sizes, act, matmul):
    """As `composed`: the tiled loop's values when not differentiated, the composed form's under `jax.grad`."""
    def primal(x, order, scale, w_in, w_out, group_sizes):
        return tiled_ffn(x, order // (order.shape[0] // x.shape[0]), scale, w_in, w_out, group_sizes, act)

    grad_form = partial(composed, act=act, matmul=matmul)
    f = jax.custom_vjp(primal)
    f.defvjp(lambda *args: jax.vjp(grad_form, *args), lambda vjp, dy: vjp(dy))
    return f(x, order, scale, w_in, w_out, group_sizes)
