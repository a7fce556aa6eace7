"""Mamba-2 mixer (SSD block with gated RMSNorm), in JAX.

Paper: Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space
Duality" (ICML 2024), Sec. 7 (the Mamba-2 block). Reference implementation: mamba_ssm ``Mamba2``
(mamba_ssm/modules/mamba2.py; defaults D_has_hdim=False, dt_limit=(0, inf), no d_mlp part; its rmsnorm (`out_norm`),
norm_before_gate, bias and conv_bias switches and d_ssm (`inner`) are spec options); parameter names match
transformers' ``Mamba2Mixer`` (models/mamba2/modeling_mamba2.py). Mirrors hybridc_torch/layers/mamba2.py (same
parameters and math).

Glossary of dimension letters:
    B: batch    L: sequence length    D: model dim    E: inner dim (spec.inner)    H: heads (E / P)    P: head dim
    G: groups of B/C    N: state size    K: conv width    X: conv channels (E + 2 G N)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..ops.causal_conv1d import causal_conv1d as causal_conv1d_op
from ..ops.rms_norm_gated import rms_norm_gated as rms_norm_gated_op
from ..ops.ssd import ssd, ssd_step
from ._conv import causal_conv1d, conv_init
from .common import bias_init, linear, linear_init, recurrent_dtype
from .mamba import init_dt_bias

__all__ = ["init", "init_state", "apply", "step", "rms_norm_gated"]

OP = "ssd"  # the recurrence it runs (describe --kernels)

NORM_EPS = 1e-5  # mamba_ssm Mamba2 builds its RMSNormGated with eps=1e-5


def rms_norm_gated(weight, y, z, group_size: int, eps: float = NORM_EPS, norm_before_gate: bool = False):
    """Gated group RMSNorm, computed in fp32. norm_before_gate=False: weight * rmsnorm_groupwise(y * silu(z));
    True: weight * rmsnorm_groupwise(y) * silu(z) (mamba_ssm's RMSNormGated). The op ops/rms_norm_gated (fused C++
    on CPU)."""
    return rms_norm_gated_op(y, z, weight, group_size, eps, norm_before_gate)  # (..., E)


def _dims(dim: int, spec) -> dict[str, int]:
    """E, H, P, G, N, K, X from the spec: state (N), inner (E), heads (H), conv (K), head_dim (P), groups (G)."""
    E, H, P, G = int(spec.inner), int(spec.heads), int(spec.head_dim), int(spec.groups)
    if E != H * P or H % G:
        raise ValueError(f"mamba2: inner={E} must be heads*head_dim={H}*{P}, and the head count must be divisible by "
                         f"groups={G}")
    N = int(spec.state)
    return {"E": E, "H": H, "P": P, "G": G, "N": N, "K": int(spec.conv), "X": E + 2 * G * N}


def init(dim: int, spec, *, key) -> dict[str, jax.Array]:
    """Parameters named and shaped as the torch layer's state_dict (same order)."""
    d = _dims(dim, spec)
    E, H, X = d["E"], d["H"], d["X"]
    k_in, k_conv, k_dt, k_a, k_out, k_in_b, k_out_b = jax.random.split(key, 7)
    conv_w, conv_b = conv_init(k_conv, X, d["K"])
    proj = 2 * E + 2 * d["G"] * d["N"] + H  # [z, x, B, C, dt]
    params = {
        "dt_bias": init_dt_bias(k_dt, H),
        "A_log": jnp.log(jax.random.uniform(k_a, (H,), jnp.float32, 1.0, 16.0)),
        "D": jnp.ones((H,), jnp.float32),
        "in_proj.weight": linear_init(k_in, proj, dim),
        **({"in_proj.bias": bias_init(k_in_b, proj, dim)} if spec.proj_bias else {}),
        "conv1d.weight": conv_w,  # (X, 1, K)
        **({"conv1d.bias": conv_b} if spec.conv_bias else {}),
        **({"norm.weight": jnp.ones((E,), jnp.float32)} if spec.out_norm else {}),
        "out_proj.weight": linear_init(k_out, dim, E),
        **({"out_proj.bias": bias_init(k_out_b, dim, E)} if spec.proj_bias else {}),
    }
    return params


def init_state(dim: int, spec, batch_size: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    d = _dims(dim, spec)
    return {
        "conv": jnp.zeros((batch_size, d["X"], d["K"] - 1), dtype),  # (B, X, K-1)
        "ssm": jnp.zeros((batch_size, d["H"], d["P"], d["N"]), recurrent_dtype(dtype)),  # (B, H, P, N)
    }


def _A(params) -> jax.Array:
    """A = -exp(A_log) (H,), computed in fp32 (fp64 for fp64 params)."""
    return -jnp.exp(params["A_log"].astype(recurrent_dtype(params["A_log"].dtype)))


def _project(params, x, spec, d):
    """in_proj(x * in_scale), each slice of [z, x, B, C, dt] times its muP multiplier (FalconH1Mixer's mup_vector)."""
    zxbcdt = linear(params, "in_proj", x * spec.in_scale if spec.in_scale != 1.0 else x)
    mup = [float(getattr(spec, f"{n}_scale")) for n in ("z", "x", "b", "c", "dt")]
    if all(v == 1.0 for v in mup):
        return zxbcdt
    GN = d["G"] * d["N"]
    vec = jnp.repeat(jnp.asarray(mup, zxbcdt.dtype), jnp.asarray([d["E"], d["E"], GN, GN, d["H"]]),
                     total_repeat_length=2 * d["E"] + 2 * GN + d["H"])
    return zxbcdt * vec


def _split(zxbcdt, d):
    """(..., 2E + 2GN + H) -> z (..., E), xBC (..., X), dt (..., H)."""
    E, X = d["E"], d["X"]
    return zxbcdt[..., :E], zxbcdt[..., E:E + X], zxbcdt[..., E + X:]


def _heads(xBC, d):
    """Post-conv (..., X) -> x (..., H, P), B (..., G, N), C (..., G, N)."""
    E, GN, lead = d["E"], d["G"] * d["N"], xBC.shape[:-1]
    x, B, C = xBC[..., :E], xBC[..., E:E + GN], xBC[..., E + GN:]
    groups = lead + (d["G"], d["N"])
    return x.reshape(lead + (d["H"], d["P"])), B.reshape(groups), C.reshape(groups)


def _out(params, y, z, d, spec, dtype):
    """y (..., H, P), z (..., E) -> out_proj(norm(y, z)), or out_proj(y * silu(z)) without out_norm (..., D)."""
    y = y.reshape(y.shape[:-2] + (d["E"],))  # (..., E)
    if spec.out_norm:
        eps = getattr(spec, "norm_eps", None)  # the model's `norm eps=`
        g = rms_norm_gated(params["norm.weight"], y, z, d["E"] // d["G"], eps=NORM_EPS if eps is None else eps,
                           norm_before_gate=bool(spec.norm_before_gate))
    else:
        g = rms_norm_gated_op(y, z, None, d["E"], 0.0)  # the gate alone
    out = linear(params, "out_proj", g.astype(dtype))
    return out * spec.out_scale if spec.out_scale != 1.0 else out


def _dt(params, dt, spec):
    """(dt, dt_bias, softplus) for the op: raw dt (the op adds the bias and takes softplus), or, with dt_min / dt_max
    set, softplus(dt + dt_bias) clamped here (transformers' time_step_limit) and passed as it is (torch's `_dt`)."""
    lo, hi = float(getattr(spec, "dt_min", 0.0)), getattr(spec, "dt_max", None)
    if not lo and hi is None:
        return dt, params["dt_bias"], True
    acc = recurrent_dtype(dt.dtype)
    d = jnp.clip(jax.nn.softplus(dt.astype(acc) + params["dt_bias"].astype(acc)), lo, hi)
    return d.astype(dt.dtype), None, False


def apply(params, x, spec, state=None, ctx=None):
    """x (B, L, D) -> (out (B, L, D), new_state or None)."""
    d = _dims(x.shape[-1], spec)
    z, xBC, dt = _split(_project(params, x, spec, d), d)  # (B, L, E), (B, L, X), (B, L, H)
    conv_in = None if state is None else state["conv"]
    xBC, conv_state = causal_conv1d_op(xBC, params["conv1d.weight"][:, 0], params.get("conv1d.bias"), conv_in,
                                       "silu")  # (B, L, X)
    xs, B, C = _heads(xBC, d)  # (B, L, H, P), (B, L, G, N), (B, L, G, N)
    dt, dt_bias, softplus = _dt(params, dt, spec)
    y, ssm_state = ssd(
        xs, dt, _A(params), B, C, int(spec.chunk), D=params["D"], dt_bias=dt_bias,
        initial_states=None if state is None else state["ssm"], dt_softplus=softplus, return_final_states=True,
    )  # (B, L, H, P), (B, H, P, N)
    out = _out(params, y, z, d, spec, x.dtype)  # (B, L, D)
    if state is None:
        return out, None
    return out, {"conv": conv_state.astype(state["conv"].dtype), "ssm": ssm_state}


def step(params, x_t, spec, state, ctx=None):
    """x_t (B, D) -> (out_t (B, D), new_state)."""
    d = _dims(x_t.shape[-1], spec)
    z, xBC, dt = _split(_project(params, x_t, spec, d), d)  # (B, E), (B, X), (B, H)
    xBC, conv_state = causal_conv1d(xBC[..., None], params["conv1d.weight"][:, 0], params.get("conv1d.bias"),
                                    state["conv"])
    xs, B, C = _heads(jax.nn.silu(xBC[..., 0]), d)  # (B, H, P), (B, G, N), (B, G, N)
    dt, dt_bias, softplus = _dt(params, dt, spec)
    y, ssm_state = ssd_step(state["ssm"], xs, dt, _A(params), B, C, D=params["D"], dt_bias=dt_bias,
                            dt_softplus=softplus)  # (B, H, P), (B, H, P, N)
    out = _out(params, y, z, d, spec, x_t.dtype)  # (B, D)
    return out, {"conv": conv_state.astype(state["conv"].dtype), "ssm": ssm_state}
