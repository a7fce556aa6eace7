"""Cost formulas for attention, the standalone MLP, the FFN sub-block and norms (mirrors hybridc_torch's layers).

Parameterization (docs/layers.md): attention `q_proj` (H*hd, D), `k_proj`/`v_proj` (KV*hd, D), `o_proj` (D, H*hd), no biases,
`q_norm`/`k_norm` RMSNorm weights (hd,) when qk_norm. FFN/MLP: `up` (F, D)+bias, `down` (D, F)+bias with F = int(mult*D);
swiglu: `gate`, `up` (F, D), `down` (D, F), no biases. Decode state of attention depends on the context: see `attn_state_numel`.
"""
from __future__ import annotations


def hidden(mult: float, dim: int) -> int:
    """FFN hidden width F = int(mult * dim) (at least 1)."""
    return max(1, int(mult * dim))


def ffn_params(mult: float, act: str, dim: int) -> int:
    f = hidden(mult, dim)
    if act == "swiglu":
        return 3 * dim * f
    return dim * f + f + f * dim + dim


def ffn_flops(mult: float, act: str, dim: int) -> int:
    return 2 * (3 if act == "swiglu" else 2) * dim * hidden(mult, dim)


def norm_params(norm: str, dim: int) -> int:
    return 2 * dim if norm == "layer" else dim


def attn_params(spec, dim: int) -> int:
    inner, kv = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    return 2 * dim * inner + 2 * dim * kv + (2 * spec.head_dim if spec.qk_norm else 0)


def attn_keys(spec, context: int, meta: int) -> int:
    """Keys a query at position `context` attends to (meta tokens always included)."""
    seen = context if spec.window is None else min(context, spec.window)
    return meta + seen


def attn_state_numel(spec, dim: int, context: int = 0, meta: int = 0) -> int:
    """KV cache elements per sequence after `context` steps: meta tokens plus the (window-capped) past."""
    return 2 * spec.kv_heads * spec.head_dim * attn_keys(spec, context, meta)


def attn_flops(spec, dim: int, context: int = 0, meta: int = 0) -> int:
    inner, kv = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    return 2 * dim * (2 * inner + 2 * kv) + 4 * inner * attn_keys(spec, context, meta)


def resolve_attn(options: dict, dim: int) -> dict:
    out = dict(options)
    if out.get("kv_heads", "auto") == "auto":
        out["kv_heads"] = out.get("heads", 4)
    return out


def mlp_params(spec, dim: int) -> int:
    return ffn_params(spec.mult, spec.act, dim)


def mlp_flops(spec, dim: int, context: int = 0, meta: int = 0) -> int:
    return ffn_flops(spec.mult, spec.act, dim)


def _zero(spec, dim: int, context: int = 0, meta: int = 0) -> int:
    return 0


def _same(options: dict, dim: int) -> dict:
    return dict(options)


FORMULAS = {
    "attn": (attn_params, attn_state_numel, attn_flops, resolve_attn),
    "mlp": (mlp_params, _zero, mlp_flops, _same),
}
