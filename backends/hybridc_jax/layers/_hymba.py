"""Hymba's fused hybrid-head block in JAX (`fusion hymba` on a `mamba|attn` parallel block).

Mirrors hybridc_torch/layers/_hymba.py (same parameter names and math): Dong et al. 2024 (arXiv:2411.13676), Sec. 2.1;
nvidia/Hymba-1.5B-Base modeling_hymba.py `HymbaBlock`. One in_proj -> [q | k | v | x | z] (no k, v with kv_reuse);
attention heads (values E/H wide, the attn layer's masks, ring cache and KV sharing via `attend_heads`) and Mamba-1
SSM heads side by side; out_proj((norm_attn(attn) + norm_ssm(ssm)) / 2). Costs and checks: hybridc/hymba.py.

Glossary: B batch, L steps, D model dim, E inner width, H heads, G kv heads, hd head_dim, Ev = E / H.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..ops.selective_scan import selective_scan
from . import attn as attn_layer
from . import mamba as mamba_layer
from ._conv import causal_conv1d
from .common import bias_init, linear, linear_init, prefixed, sub

__all__ = ["init", "init_state", "apply", "step"]


def _widths(dim: int, ssm, at) -> list[int]:
    """in_proj's output slices: q, k, v (none with kv_reuse), x, z."""
    e = mamba_layer._dims(dim, ssm)[0]
    ev, g, hd = e // at.heads, at.kv_heads, at.head_dim
    return [at.heads * hd, *(() if at.kv_reuse else (g * hd, g * ev)), e, e]


def init(dim: int, specs, norm_init, *, key) -> dict:
    """specs: (mamba spec, attn spec); norm_init(width) -> the model's norm parameters at that width."""
    ssm, at = specs
    k_ssm, k_attn, k_in, k_out, k_inb, k_outb = jax.random.split(key, 6)
    e, widths = mamba_layer._dims(dim, ssm)[0], _widths(dim, ssm, at)
    own = mamba_layer.init(dim, ssm, key=k_ssm)
    p = prefixed("ssm", {k: v for k, v in own.items() if not k.startswith(("in_proj.", "out_proj."))})
    norms = attn_layer.init(1, at, key=k_attn)  # its QK-norm weights; the projections are the fused block's
    p |= prefixed("attn", {k: v for k, v in norms.items() if k.startswith(("q_norm.", "k_norm."))})
    p |= {"in_proj.weight": linear_init(k_in, sum(widths), dim), "out_proj.weight": linear_init(k_out, dim, e)}
    if ssm.proj_bias:
        p |= {"in_proj.bias": bias_init(k_inb, sum(widths), dim), "out_proj.bias": bias_init(k_outb, dim, e)}
    return p | prefixed("norm_attn", norm_init(e)) | prefixed("norm_ssm", norm_init(e))


def init_state(dim: int, specs, batch_size: int, dtype=jnp.float32, *, max_len=None, meta: int = 0) -> dict:
    ssm, at = specs
    ev = mamba_layer._dims(dim, ssm)[0] // at.heads
    return {"ssm": mamba_layer.init_state(dim, ssm, batch_size, dtype),
            "attn": attn_layer.init_state(dim, at, batch_size, dtype, max_len=max_len, meta=meta, v_dim=ev)}


def _heads(params, q, k, v, at, pos, ev: int):
    """(B, L, H*hd), (B, L, G*hd), (B, L, G*Ev) or None -> (B, H, L, hd), (B, G, L, hd), (B, G, L, Ev)."""
    b, l, _ = q.shape
    q = attn_layer.position_q(params, q.reshape(b, l, at.heads, at.head_dim).transpose(0, 2, 1, 3), at, pos)
    if k is None:
        return q, None, None
    k = k.reshape(b, l, at.kv_heads, at.head_dim).transpose(0, 2, 1, 3)
    k = attn_layer._qk_norm(params, "k_norm", k, at) if "k_norm.weight" in params else k  # per head, the model's norm
    if at.rope:
        k = attn_layer.partial_rope(k, pos, at.rope_base, int(at.head_dim * at.rope_fraction))
    return q, k, v.reshape(b, l, at.kv_heads, ev).transpose(0, 2, 1, 3)


def _scan(params, xi, z, ssm, state):
    """The SSM heads: xi, z (B, L, E) -> y (B, L, E), new state (mamba's apply without its projections)."""
    xc, conv_state = causal_conv1d(xi.transpose(0, 2, 1), params["conv1d.weight"][:, 0], params.get("conv1d.bias"),
                                   None if state is None else state["conv"])
    xc = jax.nn.silu(xc)  # (B, E, L)
    dt, B, C = mamba_layer._ssm_inputs(params, xc.transpose(0, 2, 1), ssm)  # (B, L, E), (B, L, N), (B, L, N)
    y, ssm_state = selective_scan(
        xc, dt.transpose(0, 2, 1), mamba_layer._A(params), B.transpose(0, 2, 1), C.transpose(0, 2, 1),
        D=params["D"], z=z.transpose(0, 2, 1), delta_bias=params["dt_proj.bias"], delta_softplus=True,
        return_last_state=True, initial_state=None if state is None else state["ssm"])  # (B, E, L), (B, E, N)
    y = y.transpose(0, 2, 1).astype(xi.dtype)
    if state is None:
        return y, None
    return y, {"conv": conv_state.astype(state["conv"].dtype), "ssm": ssm_state}


def apply(params, x, specs, norm, state=None, ctx=None):
    """x (B, L, D) normed -> (y (B, L, D), new_state or None); norm(params, prefix, x) applies the model's norm."""
    ssm, at = specs
    ctx = {} if ctx is None else ctx
    widths = _widths(x.shape[-1], ssm, at)
    q_pos = ctx.get("pos", 0) + jnp.arange(x.shape[1])  # (L,)
    cuts = [sum(widths[:i + 1]) for i in range(len(widths) - 1)]
    parts = jnp.split(linear(params, "in_proj", x), cuts, axis=-1)
    q, k, v, xi, z = parts if len(parts) == 5 else (parts[0], None, None, *parts[1:])
    q, k, v = _heads(sub(params, "attn"), q, k, v, at, q_pos, widths[-1] // at.heads)
    a, sa = attn_layer.attend_heads(q, k, v, q_pos, at, None if state is None else state["attn"], ctx)  # (B, L, E)
    s, ss = _scan(sub(params, "ssm"), xi, z, ssm, None if state is None else state["ssm"])  # (B, L, E)
    y = linear(params, "out_proj", (norm(params, "norm_attn", a) + norm(params, "norm_ssm", s)) / 2)  # (B, L, D)
    return y, (None if state is None else {"ssm": ss, "attn": sa})


def step(params, x_t, specs, norm, state, ctx=None):
    y, new = apply(params, x_t[:, None], specs, norm, state, ctx)
    return y[:, 0], new
