"""Depthwise causal short convolution with a decode state (shared by DeltaNet / Gated DeltaNet), in JAX.

Follows flash-linear-attention's ``fla.modules.ShortConvolution`` (an ``nn.Conv1d`` subclass: parameter ``weight``
(C, 1, W), optional ``bias`` (C,), ``nn.Conv1d``'s default init, optional SiLU), used by the DeltaNet family
(Yang et al. 2024, arXiv:2406.06484). Mirrors hybridc_torch/layers/_shortconv.py: the torch class's methods become
the pure functions ``init`` / ``init_state`` / ``apply`` (forward) / ``step`` over a params dict {"weight"[, "bias"]}.
Unlike fla (whose cache keeps W inputs) the decode state keeps exactly the last W-1 inputs, channel-major like fla's
cache:

    y_t = act(bias + sum_{j<W} weight[:, 0, j] * x_{t-W+1+j})        # zero history before t = 0

Dimension glossary:
    B batch, L sequence length, C channels, W kernel width.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ._conv import causal_conv1d_step, causal_conv1d_time_major, conv_init

__all__ = ["init", "init_state", "apply", "step"]

ACTIVATIONS = (None, "silu", "swish")


def init(channels: int, kernel_size: int, bias: bool = False, *, key) -> dict[str, jax.Array]:
    """nn.Conv1d(groups=channels) default init: weight (C, 1, W) [and bias (C,)] ~ U(-1/sqrt(W), 1/sqrt(W))."""
    weight, b = conv_init(key, channels, kernel_size)                            # (C, 1, W), (C,)
    return {"weight": weight, "bias": b} if bias else {"weight": weight}


def init_state(channels: int, kernel_size: int, batch_size: int, dtype=jnp.float32) -> jax.Array:
    return jnp.zeros((batch_size, channels, kernel_size - 1), dtype)                                # (B, C, W-1)


def _act(y, activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"ShortConvolution activation must be None, 'silu' or 'swish', got {activation!r}")
    return jax.nn.silu(y) if activation is not None else y


def apply(params, x, cache=None, activation: str | None = "silu"):
    """x (B, L, C); cache (B, C, W-1) or None (zeros). Returns (y (B, L, C), new cache (B, C, W-1))."""
    y, new_cache = causal_conv1d_time_major(x, params["weight"][:, 0, :], params.get("bias"), cache)  # (B, L, C)
    return _act(y, activation), new_cache                                       # (B, L, C), (B, C, W-1)


def step(params, x_t, cache, activation: str | None = "silu"):
    """x_t (B, C); cache (B, C, W-1). Returns (y_t (B, C), new cache (B, C, W-1))."""
    y, new_cache = causal_conv1d_step(x_t, params["weight"][:, 0, :], params.get("bias"), cache)   # (B, C)
    return _act(y, activation), new_cache                                        # (B, C), (B, C, W-1)
