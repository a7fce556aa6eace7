"""Small shared pieces of the JAX layers: torch-layout linears, norms, parameter sub-dicts, the dtype of
recurrent states.

Linear weights are stored as torch does, (out, in), so one safetensors file serves both backends.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def recurrent_dtype(dtype) -> jnp.dtype:
    """dtype of recurrent states: fp32, or fp64 for fp64 models (the kernels accumulate in the same)."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def linear_init(key, out_dim: int, in_dim: int) -> jax.Array:
    """torch.nn.Linear's default weight init: U(-1/sqrt(in), 1/sqrt(in)), shape (out, in)."""
    bound = 1.0 / math.sqrt(in_dim)
    return jax.random.uniform(key, (out_dim, in_dim), jnp.float32, -bound, bound)


def bias_init(key, out_dim: int, in_dim: int) -> jax.Array:
    bound = 1.0 / math.sqrt(in_dim)
    return jax.random.uniform(key, (out_dim,), jnp.float32, -bound, bound)


def linear(params: dict, name: str, x):
    """x (..., in) @ W.T (+ b) with W = params[name + '.weight'] (out, in)."""
    y = x @ params[f"{name}.weight"].T.astype(x.dtype)
    b = params.get(f"{name}.bias")
    return y if b is None else y + b.astype(x.dtype)


def rms_norm(x, weight, eps: float):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (y * weight).astype(x.dtype)


def layer_norm(x, weight, bias, eps: float = 1e-5):
    x32 = x.astype(jnp.float32)
    mu = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mu), axis=-1, keepdims=True)
    return ((x32 - mu) * jax.lax.rsqrt(var + eps) * weight + bias).astype(x.dtype)


def norm_init(kind: str, dim: int) -> dict:
    return {"weight": jnp.ones((dim,))} | ({"bias": jnp.zeros((dim,))} if kind == "layer" else {})


def norm_apply(params: dict, prefix: str, x, kind: str):
    """LayerNorm (eps 1e-5) or RMSNorm (eps 1e-6), as the torch backend's `make_norm`."""
    if kind == "layer":
        return layer_norm(x, params[f"{prefix}.weight"], params[f"{prefix}.bias"])
    return rms_norm(x, params[f"{prefix}.weight"], 1e-6)


def sub(params: dict, prefix: str) -> dict:
    """The entries under `prefix.` with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix + ".")}


def prefixed(prefix: str, params: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in params.items()}
