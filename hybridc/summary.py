"""`describe`: the schedule at a glance, parameters, inference state at a context length, FLOPs per token.

Parameter counts are exact (a test checks them against the torch backend's numel sum); state counts are what the
torch backend's decode state holds after `context` steps (KV caches window-capped, meta tokens included).
"""
from __future__ import annotations

from . import costs
from .costs.attn import ffn_flops, ffn_params, norm_params
from .ir import AttnSpec, Layer, Model

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def _ffn_params(layer: Layer, dim: int, norm: str) -> int:
    if layer.ffn is None:
        return 0
    f = layer.ffn
    inner = costs.formulas("rwkv_cmix")[0](f, dim) if f.token_shift else ffn_params(f.mult, f.act, dim)
    return norm_params(norm, dim) + inner


def _ffn_state(layer: Layer, dim: int) -> int:
    if layer.ffn is None or not layer.ffn.token_shift:
        return 0
    return costs.formulas("rwkv_cmix")[1](layer.ffn, dim)


def _ffn_flops(layer: Layer, dim: int) -> int:
    if layer.ffn is None:
        return 0
    f = layer.ffn
    return costs.formulas("rwkv_cmix")[2](f, dim) if f.token_shift else ffn_flops(f.mult, f.act, dim)


def layer_params(layer: Layer, model: Model) -> int:
    """Parameters of one block: pre-norm, mixers, parallel fusion, FFN (norm + FFN)."""
    d = model.dim
    n = norm_params(model.norm, d) + sum(costs.params(m, d) for m in layer.mixers)
    if layer.parallel:
        n += d * d + d if model.fusion == "gate" else 2 * norm_params(model.norm, d)
    return n + _ffn_params(layer, d, model.norm)


def layer_state_numel(layer: Layer, model: Model, context: int) -> int:
    return sum(costs.state_numel(m, model.dim, context, model.meta_tokens) for m in layer.mixers) + _ffn_state(layer, model.dim)


def layer_flops(layer: Layer, model: Model, context: int) -> int:
    d = model.dim
    f = sum(costs.flops(m, d, context, model.meta_tokens) for m in layer.mixers) + _ffn_flops(layer, d)
    if layer.parallel and model.fusion == "gate":
        f += 2 * d * d
    return f


def io_params(model: Model) -> dict:
    d = model.dim
    out = {"input": model.vocab * d if model.vocab is not None else (model.input * d + d if model.input != d else 0),
           "meta_tokens": model.meta_tokens * d, "final_norm": norm_params(model.norm, d),
           "head": model.vocab * d if model.output == "logits" else 0}
    return out


def total_params(model: Model) -> int:
    seen, n = set(), 0
    for layer in model.layers:
        if layer.shared:
            if layer.kind in seen:
                continue
            seen.add(layer.kind)
        n += layer_params(layer, model)
    return n + sum(io_params(model).values())


KEY_OPTIONS = {"mamba": ("state", "expand"), "mamba2": ("state", "head_dim"), "gru": ("hidden",), "rwkv": ("head_dim",),
               "delta_net": ("heads", "head_dim"), "gated_delta_net": ("heads", "head_dim"), "griffin_lru": ("width",),
               "attn": ("heads", "kv_heads", "head_dim", "window"), "mlp": ("mult", "act")}


def _options_text(layer: Layer) -> str:
    """The key options of each mixer, plus any option that differs from the kind's default."""
    parts = []
    for m in layer.mixers:
        fields = type(m).model_fields
        shown = [k for k in fields if k != "kind" and (k in KEY_OPTIONS[m.kind] or (
            fields[k].default is not None and not callable(fields[k].default) and
            fields[k].json_schema_extra is None and getattr(m, k) != fields[k].default))]
        parts.append(" ".join(f"{k}={'none' if getattr(m, k) is None else getattr(m, k)}" for k in shown))
    text = " | ".join(parts)
    if layer.ffn is not None:
        text += f"  +ffn x{layer.ffn.mult:g} {layer.ffn.act}" + (" shift" if layer.ffn.token_shift else "")
    return text


def schedule_summary(model: Model) -> dict:
    """The seeds' `describe_schedule` fields (plus counts of parallel blocks and MLP layers)."""
    sched = model.schedule
    n_attn = sum("attn" in k.split("|") for k in sched)
    n_mlp = sum(k == "mlp" for k in sched)
    n_backbone = sum(k not in ("attn", "mlp") and "|" not in k for k in sched)
    return {"schedule": sched, "num_backbone": n_backbone, "num_attention": n_attn,
            "num_parallel": sum("|" in k for k in sched), "num_mlp": n_mlp,
            "backbone_pct": round(100.0 * n_backbone / len(sched), 2), "mode": model.mode}


def _all_attention_state(model: Model, context: int) -> int:
    attn = next((m for l in model.layers for m in l.mixers if m.kind == "attn"), None)
    spec = (attn or AttnSpec(kv_heads=4)).model_copy(update={"window": None})
    return len(model.layers) * costs.state_numel(spec, model.dim, context, model.meta_tokens)


def describe(model: Model, *, context: int = 4096, dtype: str = "fp32") -> dict:
    """Everything `hybridc describe` prints, as a dict."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)}")
    nbytes = DTYPE_BYTES[dtype]
    rows, first_shared = [], set()
    for i, layer in enumerate(model.layers):
        p = layer_params(layer, model)
        reused = layer.shared and layer.kind in first_shared
        first_shared.add(layer.kind) if layer.shared else None
        rows.append({"index": i + 1, "kind": layer.kind, "options": _options_text(layer), "params": 0 if reused else p,
                     "shared": layer.shared, "state_bytes": layer_state_numel(layer, model, context) * nbytes,
                     "flops_per_token": layer_flops(layer, model, context)})
    io = io_params(model)
    head_flops = 2 * model.dim * (model.vocab if model.output == "logits" else 0)
    in_flops = 2 * model.input * model.dim if model.input not in (None, model.dim) else 0
    return {
        "name": model.name, **schedule_summary(model), "num_layers": len(model.layers), "dim": model.dim,
        "layers": rows, "params": sum(r["params"] for r in rows) + sum(io.values()), "params_io": io,
        "context": context, "dtype": dtype, "state_bytes": sum(r["state_bytes"] for r in rows),
        "state_bytes_all_attention": _all_attention_state(model, context) * nbytes,
        "flops_per_token": sum(r["flops_per_token"] for r in rows) + head_flops + in_flops,
    }


def human(n: float, unit: str = "") -> str:
    for size, suffix in ((1 << 30, "Gi"), (1 << 20, "Mi"), (1 << 10, "Ki")) if unit == "B" else \
            ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.2f} {suffix}{unit}"
    return f"{n:g} {unit}".strip()
