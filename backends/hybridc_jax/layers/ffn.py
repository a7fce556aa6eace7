"""Feed-forward sub-blocks in JAX (mirrors hybridc_torch/layers/ffn.py): `up` -> act -> `down`, or swiglu."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .common import bias_init, linear, linear_init

ACTS = {"gelu": lambda x: jax.nn.gelu(x, approximate=False), "silu": jax.nn.silu, "relu": jax.nn.relu,
        "relu2": lambda x: jnp.square(jax.nn.relu(x))}


def hidden(mult: float, dim: int) -> int:
    return max(1, int(mult * dim))


def init(dim: int, spec, *, key) -> dict:
    f = hidden(spec.mult, dim)
    k = jax.random.split(key, 4)
    if spec.act == "swiglu":
        return {"gate.weight": linear_init(k[0], f, dim), "up.weight": linear_init(k[1], f, dim),
                "down.weight": linear_init(k[2], dim, f)}
    return {"up.weight": linear_init(k[0], f, dim), "up.bias": bias_init(k[1], f, dim),
            "down.weight": linear_init(k[2], dim, f), "down.bias": bias_init(k[3], dim, f)}


def init_state(dim: int, spec, batch_size: int, dtype=jnp.float32, **_) -> dict:
    return {}


def apply(params, x, spec, state=None, ctx=None):
    if spec.act == "swiglu":
        h = jax.nn.silu(linear(params, "gate", x)) * linear(params, "up", x)  # (B, L, F)
    else:
        h = ACTS[spec.act](linear(params, "up", x))  # (B, L, F)
    return linear(params, "down", h), (None if state is None else {})


def step(params, x_t, spec, state, ctx=None):
    return apply(params, x_t, spec, {}, ctx)
