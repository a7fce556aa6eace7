"""What several families share: activations, RoPE, padding, dropout, head and renames of a prefix.

Import side: functions take the `HFConfig` (they read and check fields, failing with located errors) and return
`.hyb` fragments. Tensor side: `under` renames every hybridc tensor under a prefix to transformers' prefix.
Export side: `refuse` raises `NotExpressible` naming the part.
"""
from __future__ import annotations

import math
from typing import Iterable

from .. import NotExpressible
from ..convert import Map, rename

# transformers' ACT2FN names -> hybridc's `act=`
ACT = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
       "gelu_fast": None, "relu": "relu", "relu2": "relu2"}
ACT_BACK = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "relu2": "relu2"}


def act(cfg, key: str, default=None) -> str:
    name = cfg.get(key, default)
    if ACT.get(name) is None:
        cfg.fail(key, "hybridc has no such activation",
                 hint="hybridc activations: " + ", ".join(k for k, v in ACT.items() if v))
    return ACT[name]


def rope(cfg, default_theta: float = 10000.0, default_fraction: float = 1.0) -> tuple[float, float]:
    """(theta, fraction) from `rope_parameters` (transformers 5) or `rope_theta` / `rope_scaling` /
    `partial_rotary_factor` (older configs); any rope type but the default one is refused."""
    theta, fraction = default_theta, default_fraction
    if "rope_scaling" in cfg:
        rs = cfg.get("rope_scaling")
        if rs is not None and rs.get("rope_type", rs.get("type", "default")) != "default":
            cfg.fail("rope_scaling", "hybridc has only the default RoPE (no scaled variants)")
    if "rope_theta" in cfg:
        theta = float(cfg.get("rope_theta"))
    if "partial_rotary_factor" in cfg:
        fraction = float(cfg.get("partial_rotary_factor"))
    if "rope_parameters" in cfg:
        rp = cfg.get("rope_parameters") or {}
        kind = rp.get("rope_type", rp.get("type", "default"))
        if kind != "default":
            cfg.fail("rope_parameters", f"rope type {kind!r}: hybridc has only the default RoPE (no scaled variants)")
        unknown = set(rp) - {"rope_type", "type", "rope_theta", "partial_rotary_factor"}
        if unknown:
            cfg.fail("rope_parameters", f"RoPE option(s) {', '.join(sorted(unknown))} hybridc does not have")
        theta = float(rp.get("rope_theta", theta))
        fraction = float(rp.get("partial_rotary_factor", fraction))
    return theta, fraction


def rope_text(theta: float, fraction: float) -> str:
    return f"rope=true rope_base={num(theta)} rope_fraction={num(fraction)}"


def rope_config(spec) -> dict:
    return {"rope_parameters": {"rope_type": "default", "rope_theta": spec.rope_base,
                                "partial_rotary_factor": spec.rope_fraction}}


def pad(cfg, vocab: int, default=None) -> str:
    """`pad_token N` for transformers' `nn.Embedding(..., padding_idx=pad_token_id)`: the row is zero and gets no
    gradient (`default`: the family config class's own pad_token_id, for a config.json that omits it)."""
    p = cfg.get("pad_token_id", default)
    if p is None:
        return ""
    if not isinstance(p, int) or not 0 <= p < vocab:
        cfg.fail("pad_token_id", f"not a token id of the {vocab}-token vocabulary")
    return f"pad_token {p}\n"


def zero(cfg, *keys: str, default=0.0) -> None:
    """Fields that must be 0 (dropout probabilities hybridc places elsewhere or not at all)."""
    for k in keys:
        v = cfg.get(k, default)
        if v not in (0, 0.0, None):
            cfg.fail(k, "hybridc has no dropout at this place; 0 is the only value it expresses exactly")


def num(x: float) -> str:
    """A number as `.hyb` prints it (ints without a point)."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e15):
        return str(int(x))
    if isinstance(x, float) and math.isinf(x):
        return "none"
    return repr(float(x))


def under(ours: Iterable[str], our_prefix: str, hf_prefix: str, special: dict | None = None) -> list[Map]:
    """A rename for every hybridc tensor under `our_prefix` (its suffix kept, or renamed by `special`)."""
    special = special or {}
    out = []
    for n in ours:
        if n.startswith(our_prefix):
            rest = n[len(our_prefix):]
            out.append(rename(hf_prefix + special.get(rest, rest), n))
    return out


def layer_names(ours: Iterable[str], i: int) -> list[str]:
    return [n for n in ours if n.startswith(f"layers.{i}.")]


def head(model, ours: Iterable[str], embed: str = "model.embed_tokens.weight", norm_f: str = "model.norm.weight",
         lm_head: str = "lm_head.weight") -> list[Map]:
    """Embedding, final norm and (untied) head."""
    ours = set(ours)
    maps = [rename(embed, "embed.weight"), rename(norm_f, "norm_f.weight")]
    if "lm_head.weight" in ours:
        maps.append(rename(lm_head, "lm_head.weight"))
    return maps


def refuse(part: str, why: str):
    raise NotExpressible(f"{part}: {why}")


def kinds(model) -> list[str]:
    """Each layer's mixer kinds joined by '+' (`mamba2`, `attn`, `attn+mamba2` for a parallel block)."""
    return ["+".join(m.kind for m in layer.mixers) for layer in model.layers]


def only(model, allowed: Iterable[str], family: str) -> list[str]:
    """Each layer's kind, refusing a layer whose kind the family has not."""
    allowed = set(allowed)
    ks = kinds(model)
    for i, k in enumerate(ks):
        if k not in allowed:
            refuse(f"layer {i + 1} ({k})", f"{family} has only {', '.join(sorted(allowed))} layers")
    return ks


def common_model(model, family: str, *, norm: str = "rms", zero_centered: bool = False, place: str = "pre") -> None:
    """Model-level settings most families share; anything else is refused by name."""
    if model.vocab is None or model.output != "logits":
        refuse("input/output", f"{family} is a causal LM: `vocab N` and `output logits`")
    if model.norm != norm:
        refuse(f"norm {model.norm}", f"{family} uses {norm} norms")
    if model.norm_zero_centered != zero_centered:
        refuse("norm zero_centered", f"{family}'s norms are {'zero-centred' if zero_centered else 'plain'}")
    if model.norm_place != place:
        refuse(f"norm place={model.norm_place}", f"{family} has {place}-norm blocks")
    if model.meta_tokens:
        refuse("meta_tokens", f"{family} has no meta tokens")
    if model.dropout:
        refuse(f"dropout {model.dropout}", f"{family} has no residual dropout")
    for k in ("embed_scale", "residual_scale", "logit_scale"):
        if getattr(model, k) != 1.0:
            refuse(k, f"{family} has no such multiplier")
    if model.logit_softcap is not None:
        refuse("logit_softcap", f"{family} has no logit soft-cap")
    for i, layer in enumerate(model.layers):
        if layer.norm_place is not None and layer.norm_place != place:
            refuse(f"layer {i + 1} norm place", f"{family} has {place}-norm blocks")
        if layer.shared or layer.site is not None:
            refuse(f"layer {i + 1} (shared)", f"{family} shares no weights between layers")


def stacked_experts(hf_expert: str, n: int, ours: str) -> list[Map]:
    """Per-expert checkpoint tensors (`hf_expert` with `{e}` and `{w}`: e.g. `...mlp.experts.{e}.{w}_proj.weight`,
    as Qwen2-MoE-style checkpoints store them) <-> hybridc's stacked `ours.gate_up_proj` (E, 2F, D) and
    `ours.down_proj` (E, D, F)."""

    def stack(xp, ts):
        return xp.cat([xp.reshape(t, (1,) + tuple(xp.shape(t))) for t in ts], 0)

    def unstack(xp, t):
        shape = tuple(xp.shape(t))
        return [xp.reshape(p, shape[1:]) for p in xp.split(t, (1,) * shape[0], 0)]

    def gate_up_back(xp, ts):
        f = xp.shape(ts[0])[1] // 2
        gate, up = xp.split(ts[0], (f, f), 1)
        return unstack(xp, gate) + unstack(xp, up)

    names = {w: tuple(hf_expert.format(e=e, w=w) for e in range(n)) for w in ("gate", "up", "down")}
    return [Map(names["gate"] + names["up"], (f"{ours}.gate_up_proj",),
                lambda xp, ts: [xp.cat([stack(xp, ts[:n]), stack(xp, ts[n:])], 1)], gate_up_back),
            Map(names["down"], (f"{ours}.down_proj",), lambda xp, ts: [stack(xp, ts)],
                lambda xp, ts: unstack(xp, ts[0]))]
