"""Jamba (AI21, transformers' `JambaForCausalLM`): Mamba-1 layers with weighted RMSNorms on dt, B and C, attention
(GQA, no positional encoding) at `i % attn_layer_period == attn_layer_offset`, each layer followed by a SwiGLU FFN
that is a sparse MoE at `i % expert_layer_period == expert_layer_offset` when `num_experts > 1`.

.hyb: `layers mamba ... attn ...`, `ffn after=all act=silu gated=true bias=false hidden=<intermediate_size>`,
`moe every=<expert_layer_period> offset=<expert_layer_offset> experts= top_k= router=softmax renorm=false`
(JambaTopKRouter: softmax in fp32, the top-k probabilities unrenormalised), `mamba state= expand= conv= dt_rank=
inner_norm=weighted eps=<rms_norm_eps> proj_bias= conv_bias=`, `attn heads= kv_heads= head_dim=hidden/heads
rope=false window=none qk_norm=none`; `hidden_act` is the FFN's and the Mamba mixer's activation (hybridc's Mamba
has SiLU, so only silu is expressible).
Tensors: names only, but for the experts: `model.embed_tokens` -> `embed`, `model.final_layernorm` -> `norm_f`, per
layer `input_layernorm` -> `norm`, `pre_ff_layernorm` -> `ffn_norm`, `mamba.*` / `self_attn.*` -> `mixer.*` (inner
norms keep their names `{dt,b,c}_layernorm`), `feed_forward.{gate,up,down}_proj` -> `ffn.{gate,up,down}`;
MoE layers `feed_forward.router` -> `ffn.router`, the checkpoint's per-expert `feed_forward.experts.{e}.{gate,up,
down}_proj` stacked -> `ffn.experts.gate_up_proj` (E, 2F, D), `ffn.experts.down_proj` (E, D, F).
"""
from __future__ import annotations

import math

from ..convert import rename
from ._common import common_model, head, layer_names, num, only, pad, refuse, stacked_experts, under, zero

MODEL_TYPE = "jamba"
HF_CLASS = "JambaForCausalLM"
IGNORED = {
    "max_position_embeddings": "Jamba has no positional encoding",
    "use_mamba_kernels": "an implementation choice (same math)",
    "use_mambapy": "an implementation choice (same math)",
    "use_associative_scan": "an implementation choice (same math)",
}


def _placed(n: int, period: int, offset: int) -> list[int]:
    return [i for i in range(n) if i % period == offset]


def _period(cfg, key: str, offset_key: str, default: tuple[int, int]) -> tuple[int, int]:
    period, offset = cfg.get(key, default[0]), cfg.get(offset_key, default[1])
    if not isinstance(period, int) or period < 1:
        cfg.fail(key, "a period of at least 1")
    if not isinstance(offset, int) or not 0 <= offset < period:
        cfg.fail(offset_key, f"an offset below the period {period}")
    return period, offset


def to_hyb(cfg) -> str:
    d, vocab, n = cfg.get("hidden_size"), cfg.get("vocab_size"), cfg.get("num_hidden_layers")
    heads = cfg.get("num_attention_heads")
    kv = cfg.get("num_key_value_heads", None) or heads
    eps = cfg.get("rms_norm_eps", 1e-6)
    zero(cfg, "attention_dropout")
    if cfg.get("sliding_window", None) is not None:  # older (remote-code) configs wrote it; transformers' has none
        cfg.fail("sliding_window", "JambaAttention is global in transformers: only null is expressible")
    act = cfg.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        cfg.fail("hidden_act", "Jamba's Mamba mixer uses hidden_act too, and hybridc's Mamba has SiLU only")
    attn_at = set(_placed(n, *_period(cfg, "attn_layer_period", "attn_layer_offset", (8, 4))))
    ep, eo = _period(cfg, "expert_layer_period", "expert_layer_offset", (2, 1))
    experts, top_k = cfg.get("num_experts", 16), cfg.get("num_experts_per_tok", 2)
    if not isinstance(experts, int) or experts < 1:
        cfg.fail("num_experts", "at least 1 (1: dense FFNs)")
    moe = ""
    if experts > 1 and _placed(n, ep, eo):
        if not isinstance(top_k, int) or not 1 <= top_k <= experts:
            cfg.fail("num_experts_per_tok", f"between 1 and num_experts = {experts}")
        moe = f"moe every={ep} offset={eo} experts={experts} top_k={top_k} router=softmax renorm=false\n"
    dt_rank = cfg.get("mamba_dt_rank", "auto")
    if dt_rank == "auto":
        dt_rank = math.ceil(d / 16)
    expand = cfg.get("mamba_expand", 2)
    if not isinstance(expand, int):
        cfg.fail("mamba_expand", "JambaMambaMixer's inner width is mamba_expand * hidden_size: an integer here")
    layers = " ".join("attn" if i in attn_at else "mamba" for i in range(n))
    return (f"dim {d}\nvocab {vocab}\n{pad(cfg, vocab)}output logits\n"
            f"tie_embeddings {num(cfg.get('tie_word_embeddings', False))}\nnorm rms eps={num(eps)}\ndropout 0\n"
            f"ffn after=all act=silu gated=true bias=false hidden={cfg.get('intermediate_size')}\n{moe}"
            f"mamba state={cfg.get('mamba_d_state', 16)} expand={expand} conv={cfg.get('mamba_d_conv', 4)} "
            f"dt_rank={dt_rank} inner_norm=weighted eps={num(eps)} "
            f"proj_bias={num(cfg.get('mamba_proj_bias', False))} conv_bias={num(cfg.get('mamba_conv_bias', True))}\n"
            f"attn heads={heads} kv_heads={kv} head_dim={d // heads} rope=false window=none qk_norm=none\n"
            f"layers {layers}\n")


def tensors(cfg, model, ours) -> list:
    maps = head(model, ours, norm_f="model.final_layernorm.weight")
    for i, layer in enumerate(model.layers):
        names = layer_names(ours, i)
        L, o = f"model.layers.{i}.", f"layers.{i}."
        mixer = "self_attn." if layer.mixers[0].kind == "attn" else "mamba."
        maps += under(names, o + "mixer.", L + mixer)
        if layer.ffn.experts:
            maps.append(rename(L + "feed_forward.router.weight", o + "ffn.router.weight"))
            maps += stacked_experts(L + "feed_forward.experts.{e}.{w}_proj.weight", layer.ffn.experts,
                                    o + "ffn.experts")
        else:
            maps += under(names, o + "ffn.", L + "feed_forward.", {f"{w}.weight": f"{w}_proj.weight"
                                                                    for w in ("gate", "up", "down")})
        maps += [rename(L + "input_layernorm.weight", o + "norm.weight"),
                 rename(L + "pre_ff_layernorm.weight", o + "ffn_norm.weight")]
    return maps


def _pattern(where: list[int], n: int) -> tuple[int, int] | None:
    """The smallest (period, offset) whose layers `i % period == offset` are exactly `where` (None: no such)."""
    for period in range(1, n + 2):
        for offset in range(period):
            if _placed(n, period, offset) == where:
                return period, offset
    return None


def _ffn(model):
    """(the dense FFN, the MoE FFN or None), refusing FFNs Jamba has not."""
    dense = {l.ffn for l in model.layers if l.ffn is not None and not l.ffn.experts}
    moe = {l.ffn for l in model.layers if l.ffn is not None and l.ffn.experts}
    if any(l.ffn is None for l in model.layers) or len(dense) > 1 or len(moe) > 1:
        refuse("ffn", "Jamba has one FFN after every layer (one for its dense layers, one for its MoE layers)")
    f = next(iter(dense or moe))
    if not f.gated or f.act != "silu" or f.bias or f.gate_scale != 1 or f.down_scale != 1:
        refuse("ffn", "Jamba's FFN is a SwiGLU MLP without biases or scales")
    m = next(iter(moe), None)
    if m is not None:
        if m.router != "softmax" or m.renorm or m.shared_experts or \
                m.model_copy(update={"experts": 0, "top_k": 2, "renorm": True}) != f.model_copy(update={"experts": 0}):
            refuse("moe", "Jamba's MoE is softmax top-k without renormalisation or shared experts, its experts the "
                          "dense FFN's shape")
    return f, m


def to_config(model) -> dict:
    common_model(model, "Jamba")
    ks = only(model, {"mamba", "attn"}, "Jamba")
    n = len(ks)
    mb = {l.mixers[0] for l in model.layers if l.mixers[0].kind == "mamba"}
    at = {l.mixers[0] for l in model.layers if l.mixers[0].kind == "attn"}
    if len(mb) > 1 or len(at) > 1:
        refuse("layer options", "Jamba's Mamba layers share one set of options, and its attention layers another")
    eps = model.norm_eps
    if eps is None:
        refuse("norm", "Jamba's RMSNorms have an explicit eps (`norm rms eps=E`)")
    f, moe = _ffn(model)
    attn_at = _pattern([i for i, k in enumerate(ks) if k == "attn"], n)
    if attn_at is None:
        refuse("layers", "Jamba places attention at i % attn_layer_period == attn_layer_offset")
    cfg = {"vocab_size": model.vocab, "hidden_size": model.dim, "num_hidden_layers": n,
           "tie_word_embeddings": model.tie_embeddings, "rms_norm_eps": eps,
           "pad_token_id": getattr(model, "pad_token", None),
           "intermediate_size": f.hidden, "hidden_act": "silu", "attention_dropout": 0.0,
           "attn_layer_period": attn_at[0], "attn_layer_offset": attn_at[1]}
    if moe is None:
        cfg.update({"num_experts": 1, "num_experts_per_tok": 1, "expert_layer_period": 1, "expert_layer_offset": 0})
    else:
        where = _pattern([i for i, l in enumerate(model.layers) if l.ffn.experts], n)
        if where is None:
            refuse("moe", "Jamba places MoE at i % expert_layer_period == expert_layer_offset")
        cfg.update({"num_experts": moe.experts, "num_experts_per_tok": moe.top_k, "expert_layer_period": where[0],
                    "expert_layer_offset": where[1]})
    if mb:
        s = mb.pop()
        if s.inner is not None or s.heads != 1 or s.inner_norm != "weighted" or s.eps != eps:
            refuse("mamba", "Jamba's Mamba has inner=expand*dim, one head, and weighted dt/B/C norms at the model's "
                            "norm eps")
        cfg.update({"mamba_d_state": s.state, "mamba_d_conv": s.conv, "mamba_expand": s.expand,
                    "mamba_dt_rank": s.dt_rank, "mamba_conv_bias": s.conv_bias, "mamba_proj_bias": s.proj_bias})
    else:
        refuse("layers", "Jamba has Mamba layers (a model of attention only is not a Jamba)")
    if at:
        a = at.pop()
        if a.window is not None or a.qk_norm not in ("none", False) or a.rope or a.gate or a.softcap or \
                a.kv_reuse or a.scale is not None or a.head_dim != model.dim // a.heads or a.qkv_bias or a.o_bias or \
                any(getattr(a, k) != 1.0 for k in ("in_scale", "key_scale", "out_scale")):
            refuse("attn", "Jamba's attention is global, no positional encoding, no QK-norm, gate or biases, "
                           "head_dim = hidden / heads")
        cfg.update({"num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads})
    else:
        cfg.update({"num_attention_heads": 1, "num_key_value_heads": 1})
    return cfg
