"""GRU mixer: a single-layer gated recurrent unit with torch.nn.GRU's parameterization, in JAX.

Paper: Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation"
(EMNLP 2014). Reference implementation: torch.nn.GRU (gate order r, z, n; PyTorch docs):
    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}
The layer output is h_t, projected back to the model dim by ``out_proj`` when hidden != dim. Mirrors
hybridc_torch/layers/gru.py: the input projection of all steps is one matmul, then ``lax.scan`` runs the fused cell.

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim    H: hidden size
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from .common import linear, linear_init

__all__ = ["init", "init_state", "apply", "step"]

KERNEL = ("lax.scan", "lax.scan over a fused GRU cell")  # no choice of implementation (describe --kernels)


def init(dim: int, spec, *, key) -> dict[str, jax.Array]:
    """nn.GRU(dim, H)'s names and init (every tensor ~ U(-1/sqrt(H), 1/sqrt(H))), plus out_proj if H != D."""
    H = int(spec.hidden)
    keys = jax.random.split(key, 5)
    bound = 1.0 / math.sqrt(H)
    shapes = {"weight_ih_l0": (3 * H, dim), "weight_hh_l0": (3 * H, H), "bias_ih_l0": (3 * H,), "bias_hh_l0": (3 * H,)}
    params = {name: jax.random.uniform(k, shape, jnp.float32, -bound, bound)
              for k, (name, shape) in zip(keys, shapes.items())}
    if H != dim:
        params["out_proj.weight"] = linear_init(keys[4], dim, H)
    return params


def init_state(dim: int, spec, batch_size: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    h_dtype = jnp.float64 if dtype == jnp.float64 else jnp.float32
    return {"h": jnp.zeros((batch_size, int(spec.hidden)), h_dtype)}  # (B, H)


def _cell(params, h, gi):
    """Fused GRU cell. h (B, H); gi = W_ih x + b_ih (B, 3H). Returns the new h (B, H)."""
    gh = h @ params["weight_hh_l0"].T.astype(h.dtype) + params["bias_hh_l0"].astype(h.dtype)  # (B, 3H)
    i_r, i_z, i_n = jnp.split(gi, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(i_r + h_r)
    z = jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h  # (B, H)


def _run(params, x, h0):
    """x (B, L, D); h0 (B, H). Returns (h_seq (B, L, H), h_last (B, H)) in x's dtype."""
    gi = x @ params["weight_ih_l0"].T.astype(x.dtype) + params["bias_ih_l0"].astype(x.dtype)  # (B, L, 3H)

    def body(h, gi_t):
        h = _cell(params, h, gi_t)
        return h, h

    h_last, h_seq = lax.scan(body, h0.astype(x.dtype), jnp.moveaxis(gi, 1, 0))  # (B, H), (L, B, H)
    return jnp.moveaxis(h_seq, 0, 1), h_last


def _project(params, h):
    return linear(params, "out_proj", h) if "out_proj.weight" in params else h


def apply(params, x, spec, state=None, ctx=None):
    """x (B, L, D) -> (out (B, L, D), new_state or None)."""
    h0 = jnp.zeros((x.shape[0], int(spec.hidden)), x.dtype) if state is None else state["h"]
    h_seq, h_last = _run(params, x, h0)
    out = _project(params, h_seq)  # (B, L, D)
    return out, None if state is None else {"h": h_last.astype(state["h"].dtype)}


def step(params, x_t, spec, state, ctx=None):
    """x_t (B, D) -> (out_t (B, D), new_state)."""
    h_seq, h_last = _run(params, x_t[:, None], state["h"])  # (B, 1, H), (B, H)
    return _project(params, h_seq[:, 0]), {"h": h_last.astype(state["h"].dtype)}
