"""Grouped matmul: the expert projections of a mixture of experts, rows grouped by expert, in JAX.

Rows of x are sorted by group (expert): rows [o_g, o_g + n_g) belong to group g, n = ``group_sizes``. Each group's
rows are multiplied once by that group's weight, stored as torch's Linear stores it (out, in):

    y[m] = w[g(m)] @ x[m]          x (M, K), w (G, N, K), group_sizes (G,) -> y (M, N)

(rows past sum(group_sizes) give zeros), i.e. ``jax.lax.ragged_dot(x, w.transpose(0, 2, 1), group_sizes)``.
Sources: ``jax.lax.ragged_dot`` (the XLA op); Gale et al., "MegaBlocks: Efficient Sparse Training with Mixture-of-
Experts" (MLSys 2023) and its JAX port megablox (`gmm`/`tgmm`, tiles of rows of one expert). Mirrors
hybridc_torch's grouped experts (``torch.nn.functional.grouped_mm``).

Implementations: ``naive.py`` (``impl="reference"``: a loop over groups with row masks, every group on every row:
the oracle, never a fast path); ``ragged.py`` (``impl="ragged_dot"``: ``jax.lax.ragged_dot_general``, what ``auto``
picks on GPU/TPU, where XLA has a grouped kernel; on CPU XLA lowers it to the dense masked form, G times the work);
``tiled.py`` (``impl="tiled"``, ``auto`` on CPU: a loop over visits of up to T rows of one group, each multiplied
once in place; its backward is the same loop, so gradients cost what the forward does).
``grouped_ffn`` (``ffn.py``): a whole expert FFN (both products and the activation) on token-slots sorted by group,
un-sorted and summed per token; with ``tiled`` its forward is one loop doing both products per visit
(``tiled.tiled_ffn``), its gradient the two grouped matmuls'.

Glossary: M rows (token-slots), K in features, N out features, G groups (experts), T rows per tile.
"""
from __future__ import annotations

import jax

from hybridc_native.choice import Op

from . import ffn
from .naive import reference

__all__ = ["grouped_matmul", "grouped_ffn", "reference", "OP"]


def _auto(device: str) -> str:
    return "tiled" if device == "cpu" else "ragged_dot"


OP = Op("grouped_matmul", __name__, {"reference": "naive:reference", "ragged_dot": "ragged:ragged_matmul",
                                     "tiled": "tiled:tiled_matmul"}, auto=_auto)


def grouped_matmul(x, w, group_sizes, *, impl="auto"):
    """y (M, N) = w[g(m)] @ x[m] for x (M, K) sorted by group, w (G, N, K), group_sizes (G,) int.
    impl: "auto" (CPU "tiled", else "ragged_dot"), "tiled", "ragged_dot" or "reference"."""
    return OP.pick(impl, jax.default_backend())(x, w, group_sizes)


def grouped_ffn(x, order, scale, w_in, w_out, group_sizes, act, *, impl="auto"):
    """y[t] = sum over token t's slots m (group g): scale[m] * w_out[g] @ act(w_in[g] @ x[t]). x (T, D); the S = T*K
    slots s = t*K + k sorted by group: order (S,), scale (S,) (by sorted slot); w_in (G, H, D), w_out (G, N, F),
    group_sizes (G,), act (..., H) -> (..., F) => y (T, N). impl: as `grouped_matmul` ("tiled": the fused loop)."""
    name = OP.resolve(impl, jax.default_backend())[0]
    form = ffn.fused if name == "tiled" else ffn.composed
    return form(x, order, scale, w_in, w_out, group_sizes, act, OP.get(name))
