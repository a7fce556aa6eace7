"""Feed-forward sub-blocks in JAX (mirrors hybridc_torch/layers/ffn.py): `down(act(up(x)))`, or gated
`down(act(gate(x)) * up(x))` (`gated=true`, or `act=swiglu`); biases on all projections or none (`spec.bias`);
muP multipliers `gate_scale` (inside act) and `down_scale` (on the output)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .common import bias_init, linear, linear_init

ACTS = {"gelu": lambda x: jax.nn.gelu(x, approximate=False), "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
        "silu": jax.nn.silu, "swiglu": jax.nn.silu, "relu": jax.nn.relu, "relu2": lambda x: jnp.square(jax.nn.relu(x))}


def hidden(spec, dim: int) -> int:
    return spec.hidden if spec.hidden is not None else max(1, int(spec.mult * dim))


def _gated(spec) -> bool:
    return spec.gated or spec.act == "swiglu"


def init(dim: int, spec, *, key) -> dict:
    f = hidden(spec, dim)
    names = [("gate", f, dim)] if _gated(spec) else []
    names += [("up", f, dim), ("down", dim, f)]
    k = jax.random.split(key, 2 * len(names))
    p = {}
    for i, (name, out, inp) in enumerate(names):
        p[f"{name}.weight"] = linear_init(k[2 * i], out, inp)
        if spec.bias:
            p[f"{name}.bias"] = bias_init(k[2 * i + 1], out, inp)
    return p


def init_state(dim: int, spec, batch_size: int, dtype=jnp.float32, **_) -> dict:
    return {}


def apply(params, x, spec, state=None, ctx=None):
    if _gated(spec):
        g = linear(params, "gate", x)  # (B, L, F)
        h = ACTS[spec.act](g * spec.gate_scale if spec.gate_scale != 1.0 else g) * linear(params, "up", x)
    else:
        h = ACTS[spec.act](linear(params, "up", x))  # (B, L, F)
    y = linear(params, "down", h)  # (B, L, D)
    return (y * spec.down_scale if spec.down_scale != 1.0 else y), (None if state is None else {})


def step(params, x_t, spec, state, ctx=None):
    return apply(params, x_t, spec, {}, ctx)
