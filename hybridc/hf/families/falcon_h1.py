"""Falcon-H1 (TII, transformers' `FalconH1ForCausalLM`): every layer a parallel block, Mamba-2 and attention side by
side on the same normed input, their outputs summed (`fusion sum`), then a SwiGLU FFN; RMSNorm at `rms_norm_eps`
(also the Mamba-2 gated norm when `mamba_rms_norm`); the muP multipliers; the embedding has `padding_idx`.

.hyb: `layers mamba2|attn xN`, `fusion sum`, `embed_scale <embedding_multiplier>`, `logit_scale
<lm_head_multiplier>`, `ffn after=all act=silu gated=true bias=<mlp_bias> hidden= gate_scale= down_scale=`
(mlp_multipliers), `mamba2 heads= head_dim= inner=<mamba_d_ssm> state= groups= conv= chunk= conv_bias=
proj_bias=<mamba_proj_bias = projectors_bias> out_norm=<mamba_rms_norm> norm_before_gate= dt_min= dt_max=
in_scale= out_scale= z_scale= x_scale= b_scale= c_scale= dt_scale=` (ssm_in/out_multiplier, ssm_multipliers),
`attn heads= kv_heads= head_dim= rope=true rope_base= window=none qk_norm=none qkv_bias= o_bias= in_scale= key_scale=
out_scale=` (attention_in/out_multiplier, key_multiplier).
Tensors (the layouts are the same): `model.embed_tokens` -> `embed`, `model.final_layernorm` -> `norm_f`, per layer
`input_layernorm` -> `norm`, `pre_ff_layernorm` -> `ffn_norm`, `feed_forward.{gate,up,down}_proj` ->
`ffn.{gate,up,down}`, `mamba.*` -> `mixer.ssm.*`, `self_attn.*` -> `mixer.attn.*`.
"""
from __future__ import annotations

import math

from ..convert import rename
from ._common import common_model, head, layer_names, num, only, pad, refuse, rope, under, zero

MODEL_TYPE = "falcon_h1"
HF_CLASS = "FalconH1ForCausalLM"
IGNORED = {
    "max_position_embeddings": "RoPE's default type does not depend on it",
    "mlp_expansion_factor": "not read by transformers' FalconH1 (intermediate_size is the FFN width)",
}
SSM = ("z", "x", "b", "c", "dt")  # ssm_multipliers' order, over in_proj's [z, x, B, C, dt]


def multiplier(cfg, key: str, default=1.0) -> float:
    """A muP multiplier: hybridc's scales are positive numbers."""
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or math.isinf(v):
        cfg.fail(key, "hybridc's multipliers are positive finite numbers")
    return float(v)


def multipliers(cfg, key: str, n: int) -> list[float]:
    vs = cfg.get(key, None)
    if vs is None:
        return [1.0] * n
    if not isinstance(vs, list) or len(vs) != n or any(isinstance(v, bool) or not isinstance(v, (int, float)) or
                                                        not 0 < v < math.inf for v in vs):
        cfg.fail(key, f"{n} positive finite numbers")
    return [float(v) for v in vs]


def mamba2_text(cfg, d: int) -> str:
    h, expand = cfg.get("mamba_n_heads", 128), cfg.get("mamba_expand", 2)
    inner = cfg.get("mamba_d_ssm", 1024)
    inner = int(expand * d) if inner is None else inner
    p = cfg.get("mamba_d_head", "auto")
    p = inner // h if p == "auto" else p
    if h * p != inner:
        cfg.fail("mamba_d_head", f"mamba_n_heads x mamba_d_head = {h * p}, but the Mamba-2 width (mamba_d_ssm, or "
                                 f"mamba_expand x hidden_size) is {inner}: FalconH1Mixer needs them equal")
    bias = cfg.get("mamba_proj_bias", False)
    if cfg.get("projectors_bias", False) != bias:
        cfg.fail("projectors_bias", "hybridc's mamba2 has biases on both in_proj and out_proj or on neither "
                                    "(proj_bias): projectors_bias must equal mamba_proj_bias")
    limit = cfg.get("time_step_limit", [0.0, math.inf])
    lo, hi = (0.0, math.inf) if limit is None else limit
    out_norm = cfg.get("mamba_rms_norm", False)
    before = cfg.get("mamba_norm_before_gate", True) and out_norm  # without the norm it changes nothing
    scales = " ".join(f"{k}_scale={num(v)}" for k, v in zip(SSM, multipliers(cfg, "ssm_multipliers", 5)))
    return (f"mamba2 heads={h} head_dim={p} inner={inner} state={cfg.get('mamba_d_state', 256)} "
            f"groups={cfg.get('mamba_n_groups', 1)} conv={cfg.get('mamba_d_conv', 4)} "
            f"chunk={cfg.get('mamba_chunk_size', 256)} conv_bias={num(cfg.get('mamba_conv_bias', True))} "
            f"proj_bias={num(bias)} out_norm={num(out_norm)} norm_before_gate={num(before)} dt_min={num(lo)} "
            f"dt_max={num(hi)} in_scale={num(multiplier(cfg, 'ssm_in_multiplier'))} "
            f"out_scale={num(multiplier(cfg, 'ssm_out_multiplier'))} {scales}\n")


def to_hyb(cfg) -> str:
    d, vocab, n = cfg.get("hidden_size", 4096), cfg.get("vocab_size", 128000), cfg.get("num_hidden_layers", 32)
    heads = cfg.get("num_attention_heads", 32)
    kv = cfg.get("num_key_value_heads", 8) or heads
    hd = cfg.get("head_dim", d // heads)
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        cfg.fail("hidden_act", "FalconH1 uses it in the Mamba-2 conv and the FFN; hybridc's mamba2 conv is silu only")
    zero(cfg, "attention_dropout")
    if cfg.get("mamba_use_mlp", True) is not True:  # the original checkpoints' fields, which transformers ignores
        cfg.fail("mamba_use_mlp", "transformers' FalconH1 always has the FFN after each layer")
    if cfg.get("attn_layer_indices", None) not in (None, list(range(n))):
        cfg.fail("attn_layer_indices", "transformers' FalconH1 has attention in every layer")
    theta, frac = rope(cfg)
    if frac != 1:
        cfg.fail("rope_parameters" if "rope_parameters" in cfg else "partial_rotary_factor",
                 "transformers' FalconH1 rotates every channel of a head (it does not read partial_rotary_factor)")
    gate, down = multipliers(cfg, "mlp_multipliers", 2)
    bias = num(cfg.get("attention_bias", False))
    return (f"dim {d}\nvocab {vocab}\n{pad(cfg, vocab, default=0)}output logits\n"
            f"tie_embeddings {num(cfg.get('tie_word_embeddings', False))}\n"
            f"norm rms eps={num(cfg.get('rms_norm_eps', 1e-5))}\ndropout 0\nfusion sum\n"
            f"embed_scale {num(multiplier(cfg, 'embedding_multiplier'))}\n"
            f"logit_scale {num(multiplier(cfg, 'lm_head_multiplier'))}\n"
            f"ffn after=all act=silu gated=true bias={num(cfg.get('mlp_bias', False))} "
            f"hidden={cfg.get('intermediate_size', 14336)} gate_scale={num(gate)} down_scale={num(down)}\n"
            + mamba2_text(cfg, d) +
            f"attn heads={heads} kv_heads={kv} head_dim={hd} rope=true rope_base={num(theta)} window=none "
            f"qk_norm=none qkv_bias={bias} o_bias={bias} in_scale={num(multiplier(cfg, 'attention_in_multiplier'))} "
            f"key_scale={num(multiplier(cfg, 'key_multiplier'))} "
            f"out_scale={num(multiplier(cfg, 'attention_out_multiplier'))}\n"
            f"layers mamba2|attn x{n}\n")


def tensors(cfg, model, ours) -> list:
    maps = head(model, ours, norm_f="model.final_layernorm.weight")
    for i in range(len(model.layers)):
        names, L = layer_names(ours, i), f"model.layers.{i}."
        maps += under(names, f"layers.{i}.mixer.ssm.", L + "mamba.")
        maps += under(names, f"layers.{i}.mixer.attn.", L + "self_attn.")
        maps += under(names, f"layers.{i}.ffn.", L + "feed_forward.",
                      {f"{w}.{b}": f"{w}_proj.{b}" for w in ("gate", "up", "down") for b in ("weight", "bias")})
        maps += [rename(L + "input_layernorm.weight", f"layers.{i}.norm.weight"),
                 rename(L + "pre_ff_layernorm.weight", f"layers.{i}.ffn_norm.weight")]
    return maps


def _mamba2_config(s) -> dict:
    if s.out_norm is False and s.norm_before_gate:
        refuse("mamba2 norm_before_gate", "without out_norm it changes nothing: write norm_before_gate=false")
    return {"mamba_n_heads": s.heads, "mamba_d_head": s.head_dim, "mamba_d_ssm": s.inner, "mamba_d_state": s.state,
            "mamba_n_groups": s.groups, "mamba_d_conv": s.conv, "mamba_chunk_size": s.chunk,
            "mamba_conv_bias": s.conv_bias, "mamba_proj_bias": s.proj_bias, "projectors_bias": s.proj_bias,
            "mamba_rms_norm": s.out_norm, "mamba_norm_before_gate": s.norm_before_gate,
            "time_step_limit": [s.dt_min, s.dt_max if s.dt_max is not None else math.inf],
            "ssm_in_multiplier": s.in_scale, "ssm_out_multiplier": s.out_scale,
            "ssm_multipliers": [getattr(s, f"{k}_scale") for k in SSM]}


def to_config(model) -> dict:
    common_model(model.model_copy(update={"embed_scale": 1.0, "logit_scale": 1.0}), "FalconH1")
    only(model, {"mamba2+attn"}, "FalconH1")
    if model.fusion != "sum":
        refuse(f"fusion {model.fusion}", "FalconH1 sums its Mamba-2 and attention outputs (fusion sum)")
    if model.norm_eps is None:
        refuse("norm eps", "FalconH1 has one eps for every norm (write `norm rms eps=X`)")
    ffns = {l.ffn for l in model.layers}
    ffn = ffns.pop() if len(ffns) == 1 else None
    if ffn is None or not ffn.gated or ffn.act != "silu" or ffn.experts or ffn.token_shift:
        refuse("ffn", "FalconH1 has one SwiGLU FFN (act=silu gated=true, no experts) after every layer")
    ssms, ats = {l.mixers[0] for l in model.layers}, {l.mixers[1] for l in model.layers}
    if len(ssms) != 1 or len(ats) != 1:
        refuse("layer options", "FalconH1's layers share one set of Mamba-2 options and one of attention options")
    s, a = ssms.pop(), ats.pop()
    if a.window is not None or a.qk_norm != "none" or not a.rope or a.rope_fraction != 1 or a.gate or a.softcap or \
            a.kv_reuse or a.scale is not None or a.qkv_bias != a.o_bias:
        refuse("attn", "FalconH1's attention is global, full RoPE, no QK-norm, gate or soft-cap, biases on all four "
                       "projections or none")
    return {"vocab_size": model.vocab, "hidden_size": model.dim, "num_hidden_layers": len(model.layers),
            "tie_word_embeddings": model.tie_embeddings, "rms_norm_eps": model.norm_eps,
            "pad_token_id": model.pad_token, "hidden_act": "silu", "attention_dropout": 0.0,
            "embedding_multiplier": model.embed_scale, "lm_head_multiplier": model.logit_scale,
            "intermediate_size": ffn.hidden or int(ffn.mult * model.dim), "mlp_bias": ffn.bias,
            "mlp_multipliers": [ffn.gate_scale, ffn.down_scale],
            "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "head_dim": a.head_dim,
            "attention_bias": a.qkv_bias, "rope_parameters": {"rope_type": "default", "rope_theta": a.rope_base},
            "attention_in_multiplier": a.in_scale, "attention_out_multiplier": a.out_scale,
            "key_multiplier": a.key_scale, **_mamba2_config(s)}
