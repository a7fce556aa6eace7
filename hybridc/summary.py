"""`describe`: the schedule at a glance, parameters, inference state at a context length, FLOPs per token.

Parameter counts are exact (a test checks them against the torch backend's numel sum); state counts are what the
torch backend's decode state holds after `context` steps (KV caches window-capped, meta tokens included).
"""
from __future__ import annotations

from . import hymba
from . import sharing
from .ir import Layer, Model
from .kinds import spec_class
from .kinds._ffn import ffn_text, router_params
from .kinds._norm import norm_params, sub_block_norms

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def layer_params(layer: Layer, model: Model, active: bool = False) -> int:
    """Parameters of one block: its norm(s), mixers, parallel fusion, FFN (norm(s) + FFN). `active`: those one token
    uses (a mixture of experts counts its router, top_k experts and shared part)."""
    d = model.dim
    count = (lambda s: s.active_params(d)) if active else (lambda s: s.params(d))
    norms = sub_block_norms(model.layer_place(layer)) * norm_params(model.norm, d)  # pre, post or both, per sub-block
    n = norms + (hymba.fused_params(*layer.mixers, d, model.norm) if fused(layer, model) else
                 sum(count(m) for m in layer.mixers))
    if layer.parallel:
        n += {"gate": d * d + d, "mean": 2 * norm_params(model.norm, d)}.get(model.fusion, 0)  # sum: none; hymba: its own
    if layer.ffn is not None:
        n += norms + count(layer.ffn)
    return n + sharing.block_extra_params(layer, model.norm, d)  # a shared block reading concat(x, embeddings)


def layer_router_params(layer: Layer, model: Model) -> int:
    """The routers' parameters in a block (its `moe` mixer and/or MoE FFN)."""
    return sum(router_params(s, model.dim) for s in (*layer.mixers, layer.ffn) if s is not None)


def fused(layer: Layer, model: Model) -> bool:
    """A parallel block that `fusion hymba` makes one Hymba block (hybridc/hymba.py: its own cost formulas)."""
    return layer.parallel and model.fusion == "hymba"


def layer_state_numel(layer: Layer, model: Model, context: int) -> int:
    if fused(layer, model):
        n = hymba.fused_state_numel(*layer.mixers, model.dim, context, model.meta_tokens)
    else:
        n = sum(m.state_numel(model.dim, context, model.meta_tokens) for m in layer.mixers)
    return n + (layer.ffn.state_numel(model.dim) if layer.ffn is not None else 0)


def layer_flops(layer: Layer, model: Model, context: int) -> int:
    d = model.dim
    if fused(layer, model):
        f = hymba.fused_flops(*layer.mixers, d, context, model.meta_tokens)
    else:
        f = sum(m.flops(d, context, model.meta_tokens) for m in layer.mixers)
    f += layer.ffn.flops(d) if layer.ffn is not None else 0
    if layer.parallel and model.fusion == "gate":
        f += 2 * d * d
    return f + sharing.block_extra_flops(layer, d, context, model.meta_tokens)  # concat widths, adapters, linear


def io_params(model: Model) -> dict:
    d = model.dim
    out = {"input": model.vocab * d if model.vocab is not None else (model.input * d + d if model.input != d else 0),
           "meta_tokens": model.meta_tokens * d, "final_norm": norm_params(model.norm, d),
           "head": model.vocab * d if model.output == "logits" and not model.tie_embeddings else 0}
    return out


SCALES = ("embed_scale", "residual_scale", "logit_scale", "logit_softcap")  # model-wide multipliers (no parameters)


def model_scales(model: Model) -> dict:
    """The model-wide scalar multipliers that differ from their defaults (describe shows them; canonical text
    writes them)."""
    fields = type(model).model_fields
    return {k: getattr(model, k) for k in SCALES if getattr(model, k) != fields[k].default}


def model_norm(model: Model) -> dict:
    """The `norm` statement's options that differ from their defaults (describe shows them; the canonical `norm`
    line writes them)."""
    fields = type(model).model_fields
    return {k.removeprefix("norm_"): getattr(model, k) for k in ("norm_eps", "norm_zero_centered", "norm_place")
            if getattr(model, k) != fields[k].default}


def _options_text(layer: Layer) -> str:
    """The key options of each mixer, plus any option that differs from the kind's default."""
    parts = []
    for m in layer.mixers:
        fields = type(m).model_fields
        shown = [k for k in fields if k != "kind" and (k in m.SHOWN or (
            not callable(fields[k].default) and
            fields[k].json_schema_extra is None and getattr(m, k) != fields[k].default))]
        if m.ROLE == "mlp":  # the FFN's own short form (width, activation, gating, bias)
            parts.append(ffn_text(m))
            continue
        parts.append(" ".join(f"{k}={'none' if getattr(m, k) is None else getattr(m, k)}" for k in shown))
    text = " | ".join(parts)
    if layer.ffn is not None:
        text += f"  +ffn {ffn_text(layer.ffn)}" + (" shift" if layer.ffn.token_shift else "")
    if layer.norm_place is not None:  # its own norm placement (`at N norm place=`)
        text += f"  norm {layer.norm_place}"
    return text


def schedule_summary(model: Model) -> dict:
    """The seeds' `describe_schedule` fields (plus counts of parallel blocks and MLP layers)."""
    roles = [[m.ROLE for m in l.mixers] for l in model.layers]
    n_attn = sum("attention" in r for r in roles)
    n_mlp = sum(r == ["mlp"] for r in roles)
    n_backbone = sum(r == ["backbone"] for r in roles)
    return {"schedule": model.schedule, "num_backbone": n_backbone, "num_attention": n_attn,
            "num_parallel": sum(len(r) == 2 for r in roles), "num_mlp": n_mlp,
            "backbone_pct": round(100.0 * n_backbone / len(roles), 2), "mode": model.mode}


def _all_attention_state(model: Model, context: int) -> int:
    attn = next((m for l in model.layers for m in l.mixers if m.ROLE == "attention"), None)
    if attn is None:
        cls = spec_class("attn")
        attn = cls(**cls.resolve({}, model.dim))
    spec = attn.model_copy(update={"window": None})
    return len(model.layers) * spec.state_numel(model.dim, context, model.meta_tokens)


def describe(model: Model, *, context: int = 4096, dtype: str = "fp32") -> dict:
    """Everything `hybridc describe` prints, as a dict."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)}")
    nbytes = DTYPE_BYTES[dtype]
    rows, first_shared = [], set()
    for i, layer in enumerate(model.layers):
        p = layer_params(layer, model)
        reused = layer.shared and sharing.share_key(layer) in first_shared   # shared weights counted once per block
        first_shared.add(sharing.share_key(layer)) if layer.shared else None
        extra = sharing.site_params(layer, model.dim)  # adapters and linear: every call site
        active = (0 if reused else layer_params(layer, model, active=True)) + extra
        p = (0 if reused else p) + extra
        rows.append({"index": i + 1, "kind": layer.kind, "options": _options_text(layer) + sharing.site_text(layer), "params": p,
                     "active_params": active, "router_params": 0 if reused else layer_router_params(layer, model),
                     "shared": layer.shared, "state_bytes": layer_state_numel(layer, model, context) * nbytes,
                     "flops_per_token": layer_flops(layer, model, context)})
    io = io_params(model)
    head_flops = 2 * model.dim * (model.vocab if model.output == "logits" else 0)
    in_flops = 2 * model.input * model.dim if model.input not in (None, model.dim) else 0
    return {
        "name": model.name, **schedule_summary(model), "num_layers": len(model.layers), "dim": model.dim,
        "layers": rows, "params": sum(r["params"] for r in rows) + sum(io.values()), "params_io": io,
        "active_params": sum(r["active_params"] for r in rows) + sum(io.values()),
        "router_params": sum(r["router_params"] for r in rows),
        "context": context, "dtype": dtype, "state_bytes": sum(r["state_bytes"] for r in rows),
        "state_bytes_all_attention": _all_attention_state(model, context) * nbytes,
        "flops_per_token": sum(r["flops_per_token"] for r in rows) + head_flops + in_flops,
        "scales": model_scales(model), "norm": {"kind": model.norm, **model_norm(model)},
    }


def human(n: float, unit: str = "") -> str:
    for size, suffix in ((1 << 30, "Gi"), (1 << 20, "Mi"), (1 << 10, "Ki")) if unit == "B" else \
            ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.2f} {suffix}{unit}"
    return f"{n:g} {unit}".strip()
