"""GraniteMoeHybrid (IBM Granite 4.0-H, transformers' `GraniteMoeHybridForCausalLM`): Mamba-2 layers
(`linear_attention`, older `mamba`) and attention layers (`full_attention`, older `attention`), each followed by a
top-k MoE plus an always-on shared SwiGLU MLP (`num_local_experts=0`: the shared MLP alone); Granite's multipliers.

.hyb: `embed_scale <embedding_multiplier>`, `residual_scale <residual_multiplier>`, `logit_scale 1/<logits_scaling>`,
`ffn act= gated=true experts= top_k= hidden=<intermediate_size> router=softmax renorm=true shared_experts=1
shared_hidden=<shared_intermediate_size>` (the router's softmax over the top-k logits is softmax + renorm), or
`ffn ... hidden=<shared_intermediate_size>` without experts; `mamba2 heads= head_dim= inner= state= groups= conv=
chunk= conv_bias= proj_bias= dt_min= dt_max=` (`time_step_limit`); `attn heads= kv_heads= head_dim=hidden/heads
scale=<attention_multiplier> rope=<position_embedding_type == "rope"> qk_norm=none window=none`. RoPE rotates the whole
head (transformers' Granite ignores `partial_rotary_factor`). `hidden_act` is also the Mamba-2 conv activation
(hybridc's is silu: others are refused there).
Tensors: `mamba.*` / `self_attn.*` -> `mixer.*` (same layouts); `block_sparse_moe.router.layer` -> `ffn.router`,
`block_sparse_moe.input_linear` (E, 2F, D) -> `ffn.experts.gate_up_proj`, `block_sparse_moe.output_linear` ->
`ffn.experts.down_proj`; `shared_mlp.input_linear` (2S, D) split in halves -> `ffn.shared.{gate,up}` (`ffn.{gate,up}`
without experts), `shared_mlp.output_linear` -> `ffn.shared.down` (`ffn.down`); `input_layernorm` -> `norm`,
`post_attention_layernorm` -> `ffn_norm`, `model.norm` -> `norm_f`.
"""
from __future__ import annotations

import math

from ..convert import rename, split
from ...kinds._ffn import moe_widths
from ._common import (ACT_BACK, act, common_model, head, layer_names, num, only, pad, refuse, rope, under, zero)

MODEL_TYPE = "granitemoehybrid"
HF_CLASS = "GraniteMoeHybridForCausalLM"
IGNORED = {
    "max_position_embeddings": "RoPE's default type does not depend on it",
    "normalization_function": "transformers' GraniteMoeHybrid never reads it (always RMSNorm)",
    "init_method": "initialisation of new weights (the checkpoint's are loaded)",
}
KINDS = {"linear_attention": "mamba2", "mamba": "mamba2", "full_attention": "attn", "attention": "attn"}


def layer_kinds(cfg, n: int) -> list[str]:
    key = "layer_types" if "layer_types" in cfg or "layers_block_type" not in cfg else "layers_block_type"
    cfg.get("layers_block_type", None)  # the older name of layer_types (transformers' attribute_map)
    types = cfg.get(key, None)
    if types is None:
        return ["mamba2"] * n  # transformers' default: every layer Mamba-2
    if not isinstance(types, list) or len(types) != n or any(t not in KINDS for t in types):
        cfg.fail(key, f"{n} entries (num_hidden_layers), each linear_attention (mamba) or full_attention (attention)")
    return [KINDS[t] for t in types]


def positions(cfg, heads: int, hd: int) -> str:
    """`rope=... scale=...` of the attention: RoPE when position_embedding_type is "rope" (transformers builds no
    rotary embedding otherwise), over the whole head."""
    mult = cfg.get("attention_multiplier", 1.0)
    scale = "none" if mult == hd ** -0.5 else num(float(mult))
    if cfg.get("position_embedding_type", None) != "rope":
        for k in ("rope_parameters", "rope_theta", "rope_scaling", "partial_rotary_factor"):
            cfg.get(k, None)  # unused without RoPE
        return f"rope=false scale={scale}"
    theta, _ = rope(cfg)  # partial_rotary_factor: Granite's default RoPE rotates the whole head regardless
    return f"rope=true rope_base={num(theta)} rope_fraction=1 scale={scale}"


def ffn_text(cfg, a: str) -> str:
    e, k = cfg.get("num_local_experts", 8), cfg.get("num_experts_per_tok", 2)
    f, s = cfg.get("intermediate_size", 11008), cfg.get("shared_intermediate_size", 1024)
    if not isinstance(s, int) or s < 1:
        cfg.fail("shared_intermediate_size", "hybridc's shared MLP has a width of at least 1")
    if not e:
        return f"ffn after=all act={a} gated=true bias=false hidden={s}\n"
    if not isinstance(k, int) or not 1 <= k <= e:
        cfg.fail("num_experts_per_tok", f"between 1 and num_local_experts = {e}")
    shared = "" if s == f else f" shared_hidden={s}"  # the auto width (shared_experts x hidden) when equal
    return (f"ffn after=all act={a} gated=true bias=false hidden={f} experts={e} top_k={k} router=softmax "
            f"renorm=true shared_experts=1{shared}\n")


def to_hyb(cfg) -> str:
    d, vocab, n = cfg.get("hidden_size", 4096), cfg.get("vocab_size", 32000), cfg.get("num_hidden_layers", 32)
    kinds = layer_kinds(cfg, n)
    zero(cfg, "attention_dropout")
    a = act(cfg, "hidden_act", "silu")
    if a != "silu" and "mamba2" in kinds:
        cfg.fail("hidden_act", "GraniteMoeHybrid's Mamba-2 applies hidden_act after its convolution, where "
                               "hybridc's is silu")
    heads = cfg.get("num_attention_heads", 32)
    kv = cfg.get("num_key_value_heads", None) or heads
    hd = cfg.get("head_dim", None) or d // heads
    h, expand = cfg.get("mamba_n_heads", 128), cfg.get("mamba_expand", 2)
    p = cfg.get("mamba_d_head", "auto")
    inner = int(expand * d)
    p = inner // h if p == "auto" else p
    if h * p != inner:
        cfg.fail("mamba_n_heads", f"mamba_n_heads x mamba_d_head = {h * p} but mamba_expand x hidden_size = {inner}: "
                                  "GraniteMoeHybrid's Mamba-2 needs them equal")
    lo, hi = cfg.get("time_step_limit", None) or [0.0, math.inf]
    bias = num(cfg.get("attention_bias", False))
    logits = cfg.get("logits_scaling", 1.0)
    if not isinstance(logits, (int, float)) or logits <= 0:
        cfg.fail("logits_scaling", "a positive divisor of the logits")
    return (f"dim {d}\nvocab {vocab}\n{pad(cfg, vocab)}output logits\n"
            f"tie_embeddings {num(cfg.get('tie_word_embeddings', False))}\n"
            f"norm rms eps={num(cfg.get('rms_norm_eps', 1e-6))}\ndropout 0\n"
            f"embed_scale {num(float(cfg.get('embedding_multiplier', 1.0)))}\n"
            f"residual_scale {num(float(cfg.get('residual_multiplier', 1.0)))}\nlogit_scale {num(1.0 / logits)}\n"
            f"{ffn_text(cfg, a)}"
            f"mamba2 heads={h} head_dim={p} inner={inner} state={cfg.get('mamba_d_state', 256)} "
            f"groups={cfg.get('mamba_n_groups', 1)} conv={cfg.get('mamba_d_conv', 4)} "
            f"chunk={cfg.get('mamba_chunk_size', 256)} conv_bias={num(cfg.get('mamba_conv_bias', True))} "
            f"proj_bias={num(cfg.get('mamba_proj_bias', False))} dt_min={num(lo)} dt_max={num(hi)}\n"
            f"attn heads={heads} kv_heads={kv} head_dim={hd} {positions(cfg, heads, hd)} window=none qk_norm=none "
            f"qkv_bias={bias} o_bias={bias}\n"
            f"layers {' '.join(kinds)}\n")


def tensors(cfg, model, ours) -> list:
    maps = head(model, ours)
    for i, layer in enumerate(model.layers):
        names, L, o = layer_names(ours, i), f"model.layers.{i}.", f"layers.{i}."
        maps += under(names, o + "mixer.", L + ("self_attn." if layer.mixers[0].kind == "attn" else "mamba."))
        maps += [rename(L + "input_layernorm.weight", o + "norm.weight"),
                 rename(L + "post_attention_layernorm.weight", o + "ffn_norm.weight")]
        f = layer.ffn
        shared = o + ("ffn.shared." if f.experts else "ffn.")
        width = moe_widths(f, model.dim)[1 if f.experts else 0]
        maps += [split(L + "shared_mlp.input_linear.weight", [shared + "gate.weight", shared + "up.weight"],
                       [width, width]),
                 rename(L + "shared_mlp.output_linear.weight", shared + "down.weight")]
        if f.experts:
            M = L + "block_sparse_moe."
            maps += [rename(M + "router.layer.weight", o + "ffn.router.weight"),
                     rename(M + "input_linear.weight", o + "ffn.experts.gate_up_proj"),
                     rename(M + "output_linear.weight", o + "ffn.experts.down_proj")]
    return maps


def _ffn_config(model) -> dict:
    ffns = {l.ffn for l in model.layers}
    if len(ffns) != 1 or None in ffns:
        refuse("ffn", "GraniteMoeHybrid has one FFN (MoE + shared MLP, or the shared MLP alone) after every layer")
    f = ffns.pop()
    if not f.gated or f.bias or f.act not in ACT_BACK or f.gate_scale != 1 or f.down_scale != 1 or f.token_shift \
            or f.hidden is None:
        refuse("ffn", "GraniteMoeHybrid's MLPs are gated, without biases or scales, of an explicit width (hidden=N)")
    cfg = {"hidden_act": ACT_BACK[f.act]}
    if not f.experts:
        return cfg | {"num_local_experts": 0, "shared_intermediate_size": f.hidden}
    if f.router != "softmax" or not f.renorm or f.shared_experts != 1 or f.shared_gate:
        refuse("ffn experts", "GraniteMoeHybrid routes by a softmax over the top-k logits (router=softmax renorm=true) "
                              "and adds one ungated shared MLP (shared_experts=1)")
    return cfg | {"num_local_experts": f.experts, "num_experts_per_tok": f.top_k, "intermediate_size": f.hidden,
                  "shared_intermediate_size": f.shared_hidden or f.hidden}


def _mamba_config(model, specs) -> dict:
    if len(set(specs)) > 1:
        refuse("mamba2", "GraniteMoeHybrid's Mamba-2 layers share one set of options")
    s = specs[0]
    if not s.out_norm or s.norm_before_gate or any(getattr(s, k) != 1.0 for k in
                                                   ("in_scale", "out_scale", "z_scale", "x_scale", "b_scale",
                                                    "c_scale", "dt_scale")):
        refuse("mamba2", "GraniteMoeHybrid's Mamba-2 has the gated norm after the gate and no multipliers")
    if s.inner % model.dim:
        refuse("mamba2 inner", "GraniteMoeHybrid's mamba_expand is an integer multiple of hidden_size")
    return {"mamba_n_heads": s.heads, "mamba_d_head": s.head_dim, "mamba_expand": s.inner // model.dim,
            "mamba_d_state": s.state, "mamba_n_groups": s.groups, "mamba_d_conv": s.conv, "mamba_chunk_size": s.chunk,
            "mamba_conv_bias": s.conv_bias, "mamba_proj_bias": s.proj_bias,
            "time_step_limit": [s.dt_min, s.dt_max if s.dt_max is not None else math.inf]}


def _attn_config(model, specs) -> dict:
    if len(set(specs)) > 1:
        refuse("attn", "GraniteMoeHybrid's attention layers share one set of options")
    a = specs[0]
    if a.window is not None or a.qk_norm != "none" or a.gate or a.softcap or a.kv_reuse or a.rope_fraction != 1 or \
            a.head_dim * a.heads != model.dim or a.qkv_bias != a.o_bias or \
            any(getattr(a, k) != 1.0 for k in ("in_scale", "key_scale", "out_scale")):
        refuse("attn", "GraniteMoeHybrid's attention is global, no QK-norm or gate, whole-head RoPE or none, "
                       "head_dim = hidden / heads")
    cfg = {"num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "attention_bias": a.qkv_bias,
           "attention_multiplier": a.scale if a.scale is not None else a.head_dim ** -0.5,
           "position_embedding_type": "rope" if a.rope else None}
    if a.rope:
        cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": a.rope_base}
    return cfg


def to_config(model) -> dict:
    common_model(model.model_copy(update={"embed_scale": 1.0, "residual_scale": 1.0, "logit_scale": 1.0}),
                 "GraniteMoeHybrid")  # Granite has these three multipliers (below)
    ks = only(model, {"mamba2", "attn"}, "GraniteMoeHybrid")
    if model.norm_eps is None:
        refuse("norm eps", "GraniteMoeHybrid's norms share one rms_norm_eps (write `norm rms eps=...`)")
    m2 = [l.mixers[0] for l in model.layers if l.mixers[0].kind == "mamba2"]
    at = [l.mixers[0] for l in model.layers if l.mixers[0].kind == "attn"]
    cfg = {"vocab_size": model.vocab, "hidden_size": model.dim, "num_hidden_layers": len(model.layers),
           "tie_word_embeddings": model.tie_embeddings, "rms_norm_eps": model.norm_eps,
           "pad_token_id": model.pad_token, "attention_dropout": 0.0, "embedding_multiplier": model.embed_scale,
           "residual_multiplier": model.residual_scale, "logits_scaling": 1.0 / model.logit_scale,
           "layer_types": ["full_attention" if k == "attn" else "linear_attention" for k in ks], **_ffn_config(model)}
    if m2:
        if cfg["hidden_act"] != "silu":
            refuse("ffn act", "GraniteMoeHybrid's hidden_act is also its Mamba-2 conv activation, silu in hybridc")
        cfg.update(_mamba_config(model, m2))
    if at:
        cfg.update(_attn_config(model, at))
    return cfg
