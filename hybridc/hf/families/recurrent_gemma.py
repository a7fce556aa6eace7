"""RecurrentGemma (Google's Griffin, transformers' `RecurrentGemmaForCausalLM`): Griffin recurrent blocks (RG-LRU)
and local attention in the cycle `block_types` (default recurrent, recurrent, attention), each followed by a GeGLU
MLP with biases; zero-centred RMSNorms `(1 + w)`; the embedding times sqrt(hidden_size) as transformers stores it
(in bfloat16: 50.5 for 2560); the logits soft-capped; a tied head; the embedding has `padding_idx`.

.hyb: `layers griffin_lru ... attn ...`, `norm rms eps= zero_centered=true`, `embed_scale <bf16(sqrt(dim))>`,
`logit_softcap <logits_soft_cap>`, `ffn after=all act=<hidden_activation> gated=true bias=true
hidden=<intermediate_size / 2>`, `griffin_lru width=<lru_width> heads=<num_attention_heads> conv=<conv1d_width>`,
`attn heads= kv_heads= head_dim= window=<attention_window_size> rope=true rope_fraction= qkv_bias= o_bias=true
qk_norm=none`.
Tensors: `model.embed_tokens` -> `embed`, `model.final_norm` -> `norm_f`, per layer `temporal_pre_norm` -> `norm`,
`channel_pre_norm` -> `ffn_norm`, `mlp_block.{gate,up,down}_proj` -> `ffn.{gate,up,down}`, `temporal_block.*` ->
`mixer.*` with the RG-LRU renamed: `conv_1d.weight` (W, 1, K) -> `conv_1d.w` (K, W), `conv_1d.bias` -> `conv_1d.b`,
`rg_lru.recurrent_param` -> `rg_lru.a_param`, `rg_lru.{input,recurrent}_gate_{weight,bias}` ->
`rg_lru.{input,a}_gate.{w,b}`.
"""
from __future__ import annotations

import math
import struct

from ..convert import rename, transform
from ._common import (ACT_BACK, act, common_model, head, layer_names, num, only, pad, refuse, rope, rope_text,
                      under, zero)

MODEL_TYPE = "recurrent_gemma"
HF_CLASS = "RecurrentGemmaForCausalLM"
IGNORED = {
    "w_init_variance_scale": "initialisation of new weights (the checkpoint's are loaded)",
    "final_w_init_variance_scale": "initialisation of new weights",
}
KINDS = {"recurrent": "griffin_lru", "attention": "attn"}
RG_LRU = {"conv_1d.b": "conv_1d.bias", "rg_lru.a_param": "rg_lru.recurrent_param",
          **{f"rg_lru.{ours}_gate.{short}": f"rg_lru.{theirs}_gate_{long}"
             for theirs, ours in (("input", "input"), ("recurrent", "a"))
             for long, short in (("weight", "w"), ("bias", "b"))}}


def bf16(x: float) -> float:
    """x rounded to bfloat16 (to float32, then to nearest even on the upper 16 bits), as torch does."""
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def block_kinds(cfg, n: int) -> list[str]:
    types = list(cfg.get("block_types", ["recurrent", "recurrent", "attention"]))
    if not types or any(t not in KINDS for t in types):
        cfg.fail("block_types", "a cycle of \"recurrent\" and \"attention\" entries")
    if "_block_types" in cfg and list(cfg.get("_block_types")) != types:  # the original checkpoints' spelling
        cfg.fail("_block_types", f"transformers does not read it (it runs block_types {types}); the two disagree")
    if cfg.get("embeddings_scale_by_sqrt_dim", True) is not True:
        cfg.fail("embeddings_scale_by_sqrt_dim", "transformers' RecurrentGemma always scales the embedding")
    return [KINDS[t] for t in (types * (n // len(types) + 1))[:n]]


def to_hyb(cfg) -> str:
    d, vocab, n = cfg.get("hidden_size", 2560), cfg.get("vocab_size", 256000), cfg.get("num_hidden_layers", 26)
    heads = cfg.get("num_attention_heads", 10)
    kv = cfg.get("num_key_value_heads", None) or heads
    hd = cfg.get("head_dim", d // heads)
    width = cfg.get("lru_width", None) or d
    window = cfg.get("sliding_window") if "sliding_window" in cfg else cfg.get("attention_window_size", 2048)
    kinds = block_kinds(cfg, n)
    if width % heads and "griffin_lru" in kinds:
        cfg.fail("lru_width", f"the RG-LRU's gates are num_attention_heads = {heads} blocks: it must divide lru_width")
    a = act(cfg, "hidden_activation", "gelu_pytorch_tanh")
    if a != "gelu_tanh" and "griffin_lru" in kinds:
        cfg.fail("hidden_activation", "hybridc's griffin_lru gates with gelu_pytorch_tanh only")
    cap = cfg.get("logits_soft_cap", 30.0)
    if cap is None or cap <= 0:
        cfg.fail("logits_soft_cap", "transformers' RecurrentGemma always soft-caps the logits: a positive number")
    zero(cfg, "attention_dropout")
    theta, frac = rope(cfg, default_fraction=0.5)
    bias = num(cfg.get("attention_bias", False))
    return (f"dim {d}\nvocab {vocab}\n{pad(cfg, vocab, default=0)}output logits\n"
            f"tie_embeddings {num(cfg.get('tie_word_embeddings', True))}\n"
            f"norm rms eps={num(cfg.get('rms_norm_eps', 1e-6))} zero_centered=true\ndropout 0\n"
            f"embed_scale {num(bf16(math.sqrt(d)))}\nlogit_softcap {num(cap)}\n"
            f"ffn after=all act={a} gated=true bias=true hidden={cfg.get('intermediate_size', 3 * 2560) // 2}\n"
            f"griffin_lru width={width} heads={heads} conv={cfg.get('conv1d_width', 4)}\n"
            f"attn heads={heads} kv_heads={kv} head_dim={hd} window={window} {rope_text(theta, frac)} "
            f"qkv_bias={bias} o_bias=true qk_norm=none\n"
            f"layers {' '.join(kinds)}\n")


def _conv(name_hf: str, ours: str):
    """conv_1d.weight (W, 1, K) <-> conv_1d.w (K, W)."""
    return transform(name_hf, ours,
                     lambda xp, t: xp.permute(xp.reshape(t, (xp.shape(t)[0], xp.shape(t)[2])), (1, 0)),
                     lambda xp, t: xp.reshape(xp.permute(t, (1, 0)), (xp.shape(t)[1], 1, xp.shape(t)[0])))


def tensors(cfg, model, ours) -> list:
    maps = head(model, ours, norm_f="model.final_norm.weight")
    for i, layer in enumerate(model.layers):
        names, L = layer_names(ours, i), f"model.layers.{i}."
        mixer = f"layers.{i}.mixer."
        if layer.mixers[0].kind == "griffin_lru":
            maps.append(_conv(L + "temporal_block.conv_1d.weight", mixer + "conv_1d.w"))
            names = [n for n in names if n != mixer + "conv_1d.w"]
        maps += under(names, mixer, L + "temporal_block.", RG_LRU)
        maps += under(names, f"layers.{i}.ffn.", L + "mlp_block.",
                      {f"{w}.{b}": f"{w}_proj.{b}" for w in ("gate", "up", "down") for b in ("weight", "bias")})
        maps += [rename(L + "temporal_pre_norm.weight", f"layers.{i}.norm.weight"),
                 rename(L + "channel_pre_norm.weight", f"layers.{i}.ffn_norm.weight")]
    return maps


def to_config(model) -> dict:
    scale = bf16(math.sqrt(model.dim))
    if model.embed_scale != scale:
        refuse(f"embed_scale {num(model.embed_scale)}", f"RecurrentGemma scales the embedding by sqrt(dim) in "
                                                        f"bfloat16: {num(scale)} at dim {model.dim}")
    if model.logit_softcap is None:
        refuse("logit_softcap", "RecurrentGemma always soft-caps the logits")
    common_model(model.model_copy(update={"embed_scale": 1.0, "logit_softcap": None}), "RecurrentGemma",
                 zero_centered=True)
    ks = only(model, {"griffin_lru", "attn"}, "RecurrentGemma")
    if model.norm_eps is None:
        refuse("norm eps", "RecurrentGemma has one eps for every norm (write `norm rms eps=X`)")
    ffns = {l.ffn for l in model.layers}
    ffn = ffns.pop() if len(ffns) == 1 else None
    if ffn is None or not ffn.gated or not ffn.bias or ffn.act not in ACT_BACK or ffn.experts or \
            ffn.token_shift or ffn.gate_scale != 1 or ffn.down_scale != 1 or \
            (ffn.act != "gelu_tanh" and "griffin_lru" in ks):
        refuse("ffn", "RecurrentGemma has one gated MLP with biases after every layer, its activation the "
                      "recurrent blocks' gelu_tanh, no experts or scales")
    grus = {l.mixers[0] for l in model.layers if l.mixers[0].kind == "griffin_lru"}
    ats = {l.mixers[0] for l in model.layers if l.mixers[0].kind == "attn"}
    if len(grus) > 1 or len(ats) > 1:
        refuse("layer options", "RecurrentGemma's recurrent blocks share one set of options, and its attention "
                                "layers another")
    g, a = (grus.pop() if grus else None), (ats.pop() if ats else None)
    if g and a and g.heads != a.heads:
        refuse("griffin_lru heads", "RecurrentGemma's RG-LRU has as many gate blocks as attention heads")
    heads = a.heads if a else g.heads
    cfg = {"vocab_size": model.vocab, "hidden_size": model.dim, "num_hidden_layers": len(model.layers),
           "tie_word_embeddings": model.tie_embeddings, "rms_norm_eps": model.norm_eps,
           "pad_token_id": model.pad_token, "logits_soft_cap": model.logit_softcap,
           "intermediate_size": 2 * (ffn.hidden or int(ffn.mult * model.dim)), "hidden_activation": ACT_BACK[ffn.act],
           "block_types": ["recurrent" if k == "griffin_lru" else "attention" for k in ks],
           "num_attention_heads": heads, "num_key_value_heads": heads, "head_dim": model.dim // heads,
           "attention_dropout": 0.0}
    if g:
        cfg.update({"lru_width": g.width, "conv1d_width": g.conv})
    if a:
        if a.window is None or a.qk_norm != "none" or not a.rope or a.gate or a.softcap or a.kv_reuse or \
                a.scale is not None or not a.o_bias or \
                any(getattr(a, k) != 1.0 for k in ("in_scale", "key_scale", "out_scale")):
            refuse("attn", "RecurrentGemma's attention is local (a window), RoPE, no QK-norm or gate, o_proj "
                           "with a bias, no multipliers")
        cfg.update({"num_key_value_heads": a.kv_heads, "head_dim": a.head_dim, "attention_window_size": a.window,
                    "attention_bias": a.qkv_bias,
                    "rope_parameters": {"rope_type": "default", "rope_theta": a.rope_base,
                                        "partial_rotary_factor": a.rope_fraction}})
    return cfg
