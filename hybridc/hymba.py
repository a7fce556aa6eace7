"""Hymba's structure (Dong et al. 2024, arXiv:2411.13676): the fused hybrid-head block (`fusion hymba`) and the
rules of cross-layer KV sharing (attn `kv_reuse=true`). Core only: shapes, exact costs, checks (docs/layers.md).

`fusion hymba` turns every parallel `mamba|attn` block into Hymba's `HymbaBlock` (nvidia/Hymba-1.5B-Base,
modeling_hymba.py): ONE input projection in_proj (D -> q, k, v, x, z) feeds the attention heads (q, k, v) and the
SSM heads (x, gate z); the attention heads' values are E/H wide (Hymba's v_head_dim = intermediate_size // heads,
so both branches output E = mamba's inner width); each branch's output is RMS-normalised with its own learned
per-channel scale (the paper's beta_1, beta_2: norm_attn, norm_ssm, Hymba's pre_avg_layernorm1/2), the two are
averaged, and ONE out_proj (E -> D) projects back. A kv_reuse layer's in_proj makes no k, v.

Symbols: D model dim, E mamba inner width, N state, R dt_rank, K conv width, H heads, G kv heads, hd head_dim,
Ev = E / H value channels per head.
"""
from __future__ import annotations

from .kinds._norm import norm_params

FUSED = ("mamba", "attn")  # the pair fusion hymba fuses: Hymba's SSM heads are Mamba-1's
ATTN_OFF = ("gate", "qkv_bias", "o_bias")  # the attention's own projections' options: the fused block has none


def head_norm(attn) -> bool:
    """QK-norm per head (`qk_norm=head`; `true` in older text)."""
    return attn.qk_norm in (True, "head")


def value_head_dim(ssm, attn, dim: int) -> int:
    """Ev: each attention head's value channels in a fused block (E / H)."""
    return ssm.width(dim) // attn.heads


def in_widths(ssm, attn, dim: int) -> list[int]:
    """Output widths of the joint in_proj, in Hymba's order: q, k, v (none with kv_reuse), x, z."""
    e, ev = ssm.width(dim), value_head_dim(ssm, attn, dim)
    kv = [] if attn.kv_reuse else [attn.kv_heads * attn.head_dim, attn.kv_heads * ev]
    return [attn.heads * attn.head_dim, *kv, e, e]


def fused_params(ssm, attn, dim: int, norm: str) -> int:
    """Parameters of a fused block's mixer: in_proj, out_proj, the SSM heads' own tensors (conv, x_proj, dt_proj,
    A_log, D, inner norms), the attention's QK-norm weights, and the two branch norms (width E)."""
    e, n, r, k = ssm.width(dim), ssm.state, ssm.dt_rank, ssm.conv
    proj_out = sum(in_widths(ssm, attn, dim))
    total = dim * proj_out + e * dim + ((proj_out + dim) if ssm.proj_bias else 0)
    total += e * k + (e if ssm.conv_bias else 0) + e * (r + 2 * n) + r * e + e + e * n + e
    total += (r + 2 * n) if ssm.inner_norm == "weighted" else 0
    total += attn.head_dim * (1 if attn.kv_reuse else 2) if head_norm(attn) else 0
    return total + 2 * norm_params(norm, e)


def fused_state_numel(ssm, attn, dim: int, context: int, meta: int) -> int:
    """The SSM heads' conv window and state, plus the attention's KV cache (values Ev wide; none with kv_reuse)."""
    e = ssm.width(dim)
    kv = 0 if attn.kv_reuse else attn.kv_heads * (attn.head_dim + value_head_dim(ssm, attn, dim)) * attn.keys(context, meta)
    return e * (ssm.conv - 1) + e * ssm.state + kv


def fused_flops(ssm, attn, dim: int, context: int, meta: int) -> int:
    """The joint projections, the SSM heads (mamba's count without its own in/out projections) and the attention
    scores / weighted values over the keys seen (2 per multiply-add; norms and the mean are elementwise)."""
    e = ssm.width(dim)
    own_proj = 2 * dim * 2 * e + 2 * e * dim + ((2 * e + dim) if ssm.proj_bias else 0)
    proj_out = sum(in_widths(ssm, attn, dim))
    joint = 2 * dim * proj_out + 2 * e * dim + ((proj_out + dim) if ssm.proj_bias else 0)
    scores = 2 * attn.heads * (attn.head_dim + value_head_dim(ssm, attn, dim)) * attn.keys(context, meta)
    return ssm.flops(dim) - own_proj + joint + scores


def fusion_problem(layer, dim: int) -> str | None:
    """Why a parallel block cannot be a fused Hymba block, or None."""
    kinds = tuple(m.kind for m in layer.mixers)
    if kinds != FUSED:
        return (f"fusion hymba fuses mamba|attn blocks (Hymba's SSM heads are Mamba-1's), this layer is "
                f"{'|'.join(kinds)} (valid: mamba|attn, or fusion gate|mean for other pairs)")
    ssm, attn = layer.mixers
    on = [k for k in ATTN_OFF if getattr(attn, k)]
    if on:
        return (f"fusion hymba: the attention has no projections of its own (one in_proj and one out_proj, with "
                f"mamba's proj_bias), so attn {', '.join(f'{k}=true' for k in on)} cannot be used (valid: "
                f"{', '.join(f'{k}=false' for k in on)}, or mamba proj_bias=true for biases)")
    if attn.qk_norm == "proj":
        return ("fusion hymba: the attention's queries and keys are slices of the joint in_proj, normed per head or "
                "not at all, so attn qk_norm=proj cannot be used (valid: qk_norm=head or qk_norm=none)")
    if getattr(ssm, "heads", None) not in (None, 1):
        return f"fusion hymba: the SSM heads are one Mamba-1 mixer, so mamba heads={ssm.heads} cannot be used " \
               f"(valid: mamba heads=1)"
    if ssm.width(dim) % attn.heads:
        return (f"fusion hymba: the attention values are E/heads wide, but mamba's inner width {ssm.width(dim)} is "
                f"not a multiple of heads={attn.heads} (valid: heads dividing {ssm.width(dim)})")
    return None


def _kv_width(layer, attn, fusion: str, dim: int) -> int:
    """Value channels per head of an attention mixer's keys/values: Ev in a fused block, else head_dim."""
    if fusion == "hymba" and layer.parallel:
        return value_head_dim(layer.mixers[0], attn, dim)
    return attn.head_dim


KV_SAME = ("kv_heads", "head_dim", "window", "rope", "rope_base", "rope_fraction")


def kv_reuse_problems(layers, fusion: str, dim: int) -> list[tuple[int, int, str]]:
    """(layer, mixer, message) for each kv_reuse attention that cannot read the previous attention layer's keys and
    values: none before it, or keys/values of another shape (kv_heads, head_dim, value width) or positions (window,
    RoPE)."""
    out, producer = [], None
    for i, layer in enumerate(layers):
        for j, m in enumerate(layer.mixers):
            if m.ROLE != "attention":
                continue
            if not getattr(m, "kv_reuse", False):
                producer = (i, layer, m)
                continue
            if producer is None:
                out.append((i, j, "attn kv_reuse=true needs an earlier attention layer with its own keys and values "
                                  "(valid: kv_reuse=true on the second and later layers of a group, e.g. `at 2 attn "
                                  "kv_reuse=true` reuses layer 1's)"))
                continue
            p_i, p_layer, p = producer
            diff = [f"{k}={getattr(m, k)} vs {getattr(p, k)}" for k in KV_SAME if getattr(m, k) != getattr(p, k)]
            wv, pv = _kv_width(layer, m, fusion, dim), _kv_width(p_layer, p, fusion, dim)
            if wv != pv:
                diff.append(f"value width {wv} vs {pv}")
            if diff:
                out.append((i, j, f"attn kv_reuse=true reads layer {p_i + 1}'s keys/values, which differ: "
                                  f"{', '.join(diff)} (valid: the same {', '.join(KV_SAME)} and value width as "
                                  f"layer {p_i + 1}, or kv_reuse=false)"))
    return out
