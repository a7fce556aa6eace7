"""Bamba (IBM, transformers' `BambaForCausalLM`): Mamba-2 layers with attention at `attn_layer_indices`, each layer
followed by a SwiGLU FFN; RMSNorm everywhere at `rms_norm_eps`.

.hyb: `layers mamba2 ... attn ...`, `ffn after=all act=<hidden_act> gated=true bias=<mlp_bias>`, `mamba2 heads=
head_dim= state= groups= conv= chunk= conv_bias= proj_bias= dt_min= dt_max=` (time_step_limit clamps dt),
`attn heads= kv_heads= head_dim=hidden/heads rope=true rope_base= rope_fraction= window=none qk_norm=none`.
Tensors: names only (the layouts are the same): `model.embed_tokens` -> `embed`, `model.final_layernorm` ->
`norm_f`, per layer `input_layernorm` -> `norm`, `pre_ff_layernorm` -> `ffn_norm`, `feed_forward.{gate,up,down}_proj`
-> `ffn.{gate,up,down}`, `mamba.*` / `self_attn.*` -> `mixer.*`.
"""
from __future__ import annotations

import math

from ..convert import rename
from ._common import (ACT_BACK, act, common_model, head, layer_names, num, only, pad, refuse, rope, rope_config,
                      rope_text, under, zero)

MODEL_TYPE = "bamba"
HF_CLASS = "BambaForCausalLM"
IGNORED = {
    "max_position_embeddings": "RoPE's default type does not depend on it",
    "z_loss_coefficient": "a training-loss coefficient",
    "mamba_chunk_size": "read: the SSD chunk (same math at any chunk)",
}


def to_hyb(cfg) -> str:
    d = cfg.get("hidden_size")
    vocab = cfg.get("vocab_size")
    n = cfg.get("num_hidden_layers")
    attn_at = set(cfg.get("attn_layer_indices", None) or [])
    heads, kv = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads")
    eps = cfg.get("rms_norm_eps", 1e-5)
    zero(cfg, "attention_dropout")
    theta, frac = rope(cfg, default_fraction=0.5)
    h, p = cfg.get("mamba_n_heads"), cfg.get("mamba_d_head")
    expand = cfg.get("mamba_expand", 2)
    if h * p != int(expand * d):
        cfg.fail("mamba_n_heads", f"mamba_n_heads x mamba_d_head = {h * p} but mamba_expand x hidden_size = "
                                  f"{int(expand * d)}: BambaMixer needs them equal")
    lo, hi = cfg.get("time_step_limit", [0.0, math.inf])
    bias = cfg.get("attention_bias", False)
    layers = " ".join("attn" if i in attn_at else "mamba2" for i in range(n))
    return (f"dim {d}\nvocab {vocab}\n{pad(cfg, vocab)}output logits\n"
            f"tie_embeddings {num(cfg.get('tie_word_embeddings', False))}\nnorm rms eps={num(eps)}\ndropout 0\n"
            f"ffn after=all act={act(cfg, 'hidden_act', 'silu')} gated=true bias={num(cfg.get('mlp_bias', False))} "
            f"hidden={cfg.get('intermediate_size')}\n"
            f"mamba2 heads={h} head_dim={p} inner={h * p} state={cfg.get('mamba_d_state')} "
            f"groups={cfg.get('mamba_n_groups', 1)} conv={cfg.get('mamba_d_conv', 4)} "
            f"chunk={cfg.get('mamba_chunk_size', 256)} conv_bias={num(cfg.get('mamba_conv_bias', True))} "
            f"proj_bias={num(cfg.get('mamba_proj_bias', False))} dt_min={num(lo)} dt_max={num(hi)}\n"
            f"attn heads={heads} kv_heads={kv} head_dim={d // heads} {rope_text(theta, frac)} window=none "
            f"qk_norm=none qkv_bias={num(bias)} o_bias={num(bias)}\n"
            f"layers {layers}\n")


def tensors(cfg, model, ours) -> list:
    maps = head(model, ours, norm_f="model.final_layernorm.weight")
    for i in range(len(model.layers)):
        names = layer_names(ours, i)
        L = f"model.layers.{i}."
        mixer = "self_attn." if model.layers[i].mixers[0].kind == "attn" else "mamba."
        maps += under(names, f"layers.{i}.mixer.", L + mixer)
        maps += under(names, f"layers.{i}.ffn.", L + "feed_forward.",
                      {f"{w}.{b}": f"{w}_proj.{b}" for w in ("gate", "up", "down") for b in ("weight", "bias")})
        maps += [rename(L + "input_layernorm.weight", f"layers.{i}.norm.weight"),
                 rename(L + "pre_ff_layernorm.weight", f"layers.{i}.ffn_norm.weight")]
    return maps


def to_config(model) -> dict:
    common_model(model, "Bamba")
    ks = only(model, {"mamba2", "attn"}, "Bamba")
    m2 = [l.mixers[0] for l in model.layers if l.mixers[0].kind == "mamba2"]
    at = [l.mixers[0] for l in model.layers if l.mixers[0].kind == "attn"]
    ffns = {l.ffn for l in model.layers}
    if len(ffns) != 1 or None in ffns:
        refuse("ffn", "Bamba has one FFN after every layer")
    ffn = ffns.pop()
    if not ffn.gated or ffn.experts or ffn.act not in ACT_BACK or ffn.gate_scale != 1 or ffn.down_scale != 1:
        refuse("ffn", "Bamba's FFN is a gated MLP without experts or scales")
    if not m2:
        refuse("layers", "Bamba has Mamba-2 layers (a model of attention only is not a Bamba)")
    if len(set(m2)) != 1 or len(set(at)) > 1:
        refuse("layer options", "Bamba's Mamba-2 layers share one set of options, and its attention layers another")
    s = m2[0]
    if not s.out_norm or s.norm_before_gate or any(getattr(s, k) != 1.0 for k in
                                                   ("in_scale", "out_scale", "z_scale", "x_scale", "b_scale",
                                                    "c_scale", "dt_scale")):
        refuse("mamba2", "Bamba's Mamba-2 has the gated norm after the gate and no multipliers")
    cfg = {"vocab_size": model.vocab, "hidden_size": model.dim, "num_hidden_layers": len(model.layers),
           "tie_word_embeddings": model.tie_embeddings, "rms_norm_eps": model.norm_eps or 1e-5,
           "pad_token_id": getattr(model, "pad_token", None),
           "intermediate_size": ffn.hidden, "hidden_act": ACT_BACK[ffn.act], "mlp_bias": ffn.bias,
           "attn_layer_indices": [i for i, k in enumerate(ks) if k == "attn"], "attention_dropout": 0.0,
           "mamba_n_heads": s.heads, "mamba_d_head": s.head_dim, "mamba_expand": s.inner / model.dim,
           "mamba_d_state": s.state, "mamba_n_groups": s.groups, "mamba_d_conv": s.conv, "mamba_chunk_size": s.chunk,
           "mamba_conv_bias": s.conv_bias, "mamba_proj_bias": s.proj_bias,
           "time_step_limit": [s.dt_min, s.dt_max if s.dt_max is not None else math.inf]}
    if cfg["mamba_expand"] == int(cfg["mamba_expand"]):
        cfg["mamba_expand"] = int(cfg["mamba_expand"])
    if at:
        a = at[0]
        if a.window is not None or a.qk_norm not in ("none", False) or not a.rope or a.gate or a.softcap or \
                a.kv_reuse or a.scale is not None or a.head_dim * a.heads != model.dim or a.qkv_bias != a.o_bias or \
                any(getattr(a, k) != 1.0 for k in ("in_scale", "key_scale", "out_scale")):
            refuse("attn", "Bamba's attention is global, RoPE, no QK-norm or gate, head_dim = hidden / heads")
        cfg.update({"num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "attention_bias": a.qkv_bias,
                    **rope_config(a)})
    else:
        cfg.update({"num_attention_heads": 1, "num_key_value_heads": 1})
    return cfg
