"""Mamba-1 mixer (selective SSM block), in JAX.

Paper: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023), Fig. 3 / Sec. 3.4.
Reference implementation: mamba_ssm ``Mamba`` (mamba_ssm/modules/mamba_simple.py) -- parameter names, shapes and
init follow it -- and transformers' ``MambaMixer`` (models/mamba/modeling_mamba.py). Mirrors
hybridc_torch/layers/mamba.py (same parameters and math, its options included: proj_bias, conv_bias, inner,
inner_norm = none | weighted (Jamba) | plain (FalconMamba), eps, heads: Zamba's per-head x_proj / dt_proj, as
transformers' ``ZambaMambaMixer``, with its channel-interleaved in_proj).

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim    E: inner dim (inner, else expand * D)    N: state size
    R: dt_rank    K: conv width    C: conv channels    H: heads    P: head width E / H
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..ops.selective_scan import selective_scan, selective_scan_step
from ._conv import causal_conv1d, conv_init
from .common import bias_init, linear, linear_init, recurrent_dtype, rms_norm

__all__ = ["init", "init_state", "apply", "step", "init_dt_bias"]

OP = "selective_scan"  # the recurrence it runs (describe --kernels)


def init_dt_bias(key, n: int, dt_min=1e-3, dt_max=0.1, dt_floor=1e-4) -> jax.Array:
    """mamba_ssm dt init: dt log-uniform in [dt_min, dt_max], floored, returned as inverse-softplus(dt) (n,)."""
    dt = jnp.exp(jax.random.uniform(key, (n,)) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = jnp.maximum(dt, dt_floor)
    return dt + jnp.log(-jnp.expm1(-dt))


def _dims(dim: int, spec) -> tuple[int, int, int, int]:
    """(E, N, R, K) from the spec: state (N), inner (else expand * dim), conv (K), dt_rank (R)."""
    E = int(spec.inner) if spec.inner is not None else int(spec.expand * dim)
    return E, int(spec.state), int(spec.dt_rank), int(spec.conv)


def init(dim: int, spec, *, key) -> dict[str, jax.Array]:
    """Parameters named and shaped as the torch layer's state_dict (same order)."""
    E, N, R, K = _dims(dim, spec)
    H = int(spec.heads)
    k_in, k_conv, k_x, k_dtw, k_dtb, k_out, k_inb, k_outb = jax.random.split(key, 8)
    conv_w, conv_b = conv_init(k_conv, E, K)
    A_log = jnp.log(jnp.tile(jnp.arange(1, N + 1, dtype=jnp.float32), (E, 1)))  # (E, N), S4D-real
    params = {
        "A_log": A_log if H == 1 else A_log.reshape(H, E // H, N),  # (E, N) | (H, P, N)
        "D": jnp.ones((E,) if H == 1 else (H, E // H), jnp.float32),  # (E,) | (H, P)
        "in_proj.weight": linear_init(k_in, 2 * E, dim),
        "conv1d.weight": conv_w,  # (E, 1, K)
        **({"conv1d.bias": conv_b} if spec.conv_bias else {}),
        "out_proj.weight": linear_init(k_out, dim, E),
    }
    if H == 1:
        params |= {"x_proj.weight": linear_init(k_x, R + 2 * N, E),
                   "dt_proj.weight": jax.random.uniform(k_dtw, (E, R), jnp.float32, -R ** -0.5, R ** -0.5),
                   "dt_proj.bias": init_dt_bias(k_dtb, E)}
    else:  # ZambaMambaMixer's per-head names and shapes, the single-head init per head
        P = E // H
        params |= {"x_proj_weight": linear_init(k_x, H * (R + 2 * N), P).reshape(H, R + 2 * N, P),
                   "dt_proj_weight": jax.random.uniform(k_dtw, (H, P, R), jnp.float32, -R ** -0.5, R ** -0.5),
                   "dt_proj_bias": init_dt_bias(k_dtb, E).reshape(H, P)}
    if spec.proj_bias:
        params |= {"in_proj.bias": bias_init(k_inb, 2 * E, dim), "out_proj.bias": bias_init(k_outb, dim, E)}
    if spec.inner_norm == "weighted":  # Jamba's names; plain norms have no weights (FalconMamba)
        params |= {"dt_layernorm.weight": jnp.ones((R,)), "b_layernorm.weight": jnp.ones((N,)),
                   "c_layernorm.weight": jnp.ones((N,))}
    return params


def init_state(dim: int, spec, batch_size: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    E, N, _, K = _dims(dim, spec)
    return {
        "conv": jnp.zeros((batch_size, E, K - 1), dtype),  # (B, E, K-1)
        "ssm": jnp.zeros((batch_size, E, N), recurrent_dtype(dtype)),  # (B, E, N)
    }


def _A(params) -> jax.Array:
    """A = -exp(A_log) (E, N), computed in fp32 (fp64 for fp64 params); heads flattened into channels."""
    A_log = params["A_log"]
    return -jnp.exp(A_log.astype(recurrent_dtype(A_log.dtype))).reshape(-1, A_log.shape[-1])


def _D_and_dt_bias(params):
    """D (E,) and the dt bias (E,), heads flattened into channels."""
    bias = params["dt_proj.bias"] if "dt_proj.bias" in params else params["dt_proj_bias"]  # (E,) | (H, P)
    return params["D"].reshape(-1), bias.reshape(-1)


def _split_in(xz, spec):
    """in_proj output (..., 2E) -> x, z (..., E): halves, or (heads > 1) Zamba's channel-interleaved pairs."""
    if int(spec.heads) == 1:
        return jnp.split(xz, 2, axis=-1)
    pairs = xz.reshape(xz.shape[:-1] + (-1, 2))  # (..., E, 2)
    return pairs[..., 0], pairs[..., 1]


def _ssm_inputs(params, xc, spec):
    """xc (..., E) post-conv activations -> dt (..., E) (before bias), B and C (..., N), or (..., H, N) per head."""
    R, N, H = int(spec.dt_rank), int(spec.state), int(spec.heads)
    if H == 1:
        dbc = linear(params, "x_proj", xc)  # (..., R + 2N)
    else:  # per head: x_proj_weight[h] @ x_h
        xh = xc.reshape(xc.shape[:-1] + (H, -1))  # (..., H, P)
        dbc = jnp.einsum("...hp,hkp->...hk", xh, params["x_proj_weight"].astype(xc.dtype))  # (..., H, R + 2N)
    dt, B, C = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:]
    if spec.inner_norm != "none":
        weight = lambda name: params.get(f"{name}.weight", 1.0)  # noqa: E731  (plain: weightless)
        dt, B, C = (rms_norm(v, weight(n), spec.eps) for v, n in
                    ((dt, "dt_layernorm"), (B, "b_layernorm"), (C, "c_layernorm")))
    if H == 1:
        return dt @ params["dt_proj.weight"].T.astype(dt.dtype), B, C
    dt = jnp.einsum("...hr,hpr->...hp", dt, params["dt_proj_weight"].astype(dt.dtype))  # (..., H, P)
    return dt.reshape(dt.shape[:-2] + (-1,)), B, C


def apply(params, x, spec, state=None, ctx=None):
    """x (B, L, D) -> (out (B, L, D), new_state or None)."""
    xi, z = _split_in(linear(params, "in_proj", x), spec)  # (B, L, E) each
    conv_in = None if state is None else state["conv"]
    xc, conv_state = causal_conv1d(xi.transpose(0, 2, 1), params["conv1d.weight"][:, 0], params.get("conv1d.bias"),
                                   conv_in)
    xc = jax.nn.silu(xc)  # (B, E, L)
    dt, B, C = _ssm_inputs(params, xc.transpose(0, 2, 1), spec)  # (B, L, E), (B, L, [H,] N) twice
    D, dt_bias = _D_and_dt_bias(params)
    y, ssm_state = selective_scan(
        xc, dt.transpose(0, 2, 1), _A(params), jnp.moveaxis(B, 1, -1), jnp.moveaxis(C, 1, -1),  # (B, [H,] N, L)
        D=D, z=z.transpose(0, 2, 1), delta_bias=dt_bias, delta_softplus=True,
        return_last_state=True, initial_state=None if state is None else state["ssm"],
    )  # (B, E, L), (B, E, N)
    out = linear(params, "out_proj", y.transpose(0, 2, 1).astype(x.dtype))  # (B, L, D)
    if state is None:
        return out, None
    return out, {"conv": conv_state.astype(state["conv"].dtype), "ssm": ssm_state}


def step(params, x_t, spec, state, ctx=None):
    """x_t (B, D) -> (out_t (B, D), new_state)."""
    xi, z = _split_in(linear(params, "in_proj", x_t), spec)  # (B, E) each
    xc, conv_state = causal_conv1d(xi[..., None], params["conv1d.weight"][:, 0], params.get("conv1d.bias"),
                                   state["conv"])
    xc = jax.nn.silu(xc[..., 0])  # (B, E)
    dt, B, C = _ssm_inputs(params, xc, spec)  # (B, E), (B, [H,] N) twice
    D, dt_bias = _D_and_dt_bias(params)
    y, ssm_state = selective_scan_step(
        state["ssm"], xc, dt, _A(params), B, C, D=D, z_t=z,
        delta_bias=dt_bias, delta_softplus=True,
    )  # (B, E), (B, E, N)
    out = linear(params, "out_proj", y.astype(x_t.dtype))  # (B, D)
    return out, {"conv": conv_state.astype(state["conv"].dtype), "ssm": ssm_state}
