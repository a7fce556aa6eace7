"""LFM2 (Liquid AI, transformers' `Lfm2ForCausalLM`): gated short convolutions with attention at the layers whose
`layer_types` entry is `full_attention`, each layer followed by a SwiGLU FFN; RMSNorm everywhere at `norm_eps`
(the block norms, the final `embedding_norm` and the per-head QK-norms); the embedding has `padding_idx`.

.hyb: `layers short_conv ... attn ...`, `ffn after=all act=silu gated=true bias=false hidden=` (the width after
transformers' `block_auto_adjust_ff_dim` rounding), `short_conv conv=<conv_L_cache> bias=<conv_bias>`,
`attn heads= kv_heads= head_dim=hidden/heads rope=true rope_base= qk_norm=head window=none`.
Tensors (the layouts are the same): `model.embed_tokens` -> `embed`, `model.embedding_norm` -> `norm_f`, per layer
`operator_norm` -> `norm`, `ffn_norm` -> `ffn_norm`, `feed_forward.w1 / w3 / w2` -> `ffn.gate / up / down`,
`conv.*` -> `mixer.*`, `self_attn.{q,k,v}_proj` -> `mixer.{q,k,v}_proj`, `self_attn.out_proj` -> `mixer.o_proj`,
`self_attn.{q,k}_layernorm` -> `mixer.{q,k}_norm`.
"""
from __future__ import annotations

from ..convert import rename
from ._common import common_model, head, layer_names, num, only, pad, refuse, rope, under

MODEL_TYPE = "lfm2"
HF_CLASS = "Lfm2ForCausalLM"
IGNORED = {
    "max_position_embeddings": "RoPE's default type does not depend on it",
    "block_mlp_init_scale": "initialisation of new weights (the checkpoint's are loaded)",
    "block_out_init_scale": "initialisation of new weights",
    "block_use_xavier_init": "initialisation of new weights",
    "conv_use_xavier_init": "initialisation of new weights",
    "block_norm_eps": "not read by transformers' Lfm2 (every norm uses norm_eps)",
}
FFN = {"gate": "w1", "up": "w3", "down": "w2"}
KINDS = {"conv": "short_conv", "full_attention": "attn"}


def ffn_width(cfg) -> int:
    """transformers' Lfm2MLP width: intermediate_size, or with block_auto_adjust_ff_dim 2/3 of it, times
    block_ffn_dim_multiplier, rounded up to block_multiple_of."""
    f = cfg.get("block_ff_dim") if "block_ff_dim" in cfg else cfg.get("intermediate_size", 12288)  # older spelling
    mult, multiple = cfg.get("block_ffn_dim_multiplier", 1.0), cfg.get("block_multiple_of", 256)
    if not cfg.get("block_auto_adjust_ff_dim", True):
        return f
    f = int(2 * f / 3)
    if mult is not None:
        f = multiple * ((int(mult * f) + multiple - 1) // multiple)
    return f


def duplicates(cfg, d: int, heads: int) -> None:
    """Older configs repeat sizes under other names (transformers reads only the main ones): they must agree."""
    for key, want in (("block_dim", d), ("conv_dim", d), ("conv_dim_out", d), ("num_heads", heads)):
        if key in cfg and cfg.get(key) != want:
            cfg.fail(key, f"transformers' Lfm2 reads {want} from the main field; this copy disagrees")
    for key in ("block_use_swiglu", "use_pos_enc"):
        if key in cfg and cfg.get(key) is not True:
            cfg.fail(key, "transformers' Lfm2 always has it (SwiGLU FFNs, RoPE): false is a model it does not run")
    if "block_ff_dim" in cfg and "intermediate_size" in cfg and cfg.get("block_ff_dim") != cfg.get("intermediate_size"):
        cfg.fail("block_ff_dim", "transformers' Lfm2 takes block_ff_dim as intermediate_size; the two disagree")


def layer_kinds(cfg, n: int) -> list[str]:
    types = cfg.get("layer_types", None)
    at = cfg.get("full_attn_idxs", None)  # used by transformers only without layer_types
    if types is None:
        at = set(range(n) if at is None else at)
        types = ["full_attention" if i in at else "conv" for i in range(n)]
    if len(types) != n or any(t not in KINDS for t in types):
        cfg.fail("layer_types", f"{n} entries (num_hidden_layers), each \"conv\" or \"full_attention\"")
    return [KINDS[t] for t in types]


def to_hyb(cfg) -> str:
    d, vocab, n = cfg.get("hidden_size", 2560), cfg.get("vocab_size", 65536), cfg.get("num_hidden_layers", 32)
    heads, kv = cfg.get("num_attention_heads", 32), cfg.get("num_key_value_heads", 8)
    hd = cfg.get("head_dim", d // heads)
    duplicates(cfg, d, heads)
    tie = cfg.get("tie_embedding") if "tie_embedding" in cfg else cfg.get("tie_word_embeddings", True)
    theta, frac = rope(cfg, default_theta=1e6)
    if frac != 1:
        cfg.fail("rope_parameters" if "rope_parameters" in cfg else "partial_rotary_factor",
                 "transformers' Lfm2 rotates every channel of a head (it does not read partial_rotary_factor)")
    bias = num(cfg.get("conv_bias", False))
    return (f"dim {d}\nvocab {vocab}\n{pad(cfg, vocab, default=0)}output logits\ntie_embeddings {num(tie)}\n"
            f"norm rms eps={num(cfg.get('norm_eps', 1e-5))}\ndropout 0\n"
            f"ffn after=all act=silu gated=true bias=false hidden={ffn_width(cfg)}\n"
            f"short_conv conv={cfg.get('conv_L_cache', 3)} bias={bias}\n"
            f"attn heads={heads} kv_heads={kv} head_dim={hd} rope=true rope_base={num(theta)} qk_norm=head "
            f"window=none\n"
            f"layers {' '.join(layer_kinds(cfg, n))}\n")


ATTN = {"out_proj.weight": "o_proj.weight", "q_layernorm.weight": "q_norm.weight",
        "k_layernorm.weight": "k_norm.weight"}


def tensors(cfg, model, ours) -> list:
    maps = head(model, ours, norm_f="model.embedding_norm.weight")
    for i, layer in enumerate(model.layers):
        names, L = layer_names(ours, i), f"model.layers.{i}."
        if layer.mixers[0].kind == "attn":
            maps += under(names, f"layers.{i}.mixer.", L + "self_attn.", {v: k for k, v in ATTN.items()})
        else:
            maps += under(names, f"layers.{i}.mixer.", L + "conv.")
        maps += under(names, f"layers.{i}.ffn.", L + "feed_forward.", {f"{k}.weight": f"{v}.weight"
                                                                       for k, v in FFN.items()})
        maps += [rename(L + "operator_norm.weight", f"layers.{i}.norm.weight"),
                 rename(L + "ffn_norm.weight", f"layers.{i}.ffn_norm.weight")]
    return maps


def to_config(model) -> dict:
    common_model(model, "LFM2")
    ks = only(model, {"short_conv", "attn"}, "LFM2")
    ffns = {l.ffn for l in model.layers}
    ffn = ffns.pop() if len(ffns) == 1 else None
    if ffn is None or not ffn.gated or ffn.act != "silu" or ffn.bias or ffn.experts or ffn.token_shift or \
            ffn.gate_scale != 1 or ffn.down_scale != 1:
        refuse("ffn", "LFM2 has one SwiGLU FFN (act=silu gated=true, no bias, experts or scales) after every layer")
    convs = {l.mixers[0] for l in model.layers if l.mixers[0].kind == "short_conv"}
    ats = {l.mixers[0] for l in model.layers if l.mixers[0].kind == "attn"}
    if len(convs) > 1 or len(ats) > 1:
        refuse("layer options", "LFM2's conv layers share one set of options, and its attention layers another")
    if model.norm_eps is None:
        refuse("norm eps", "LFM2 has one eps for every norm (write `norm rms eps=X`)")
    cfg = {"vocab_size": model.vocab, "hidden_size": model.dim, "num_hidden_layers": len(model.layers),
           "tie_word_embeddings": model.tie_embeddings, "norm_eps": model.norm_eps, "pad_token_id": model.pad_token,
           "intermediate_size": ffn.hidden or int(ffn.mult * model.dim), "block_auto_adjust_ff_dim": False,
           "layer_types": ["conv" if k == "short_conv" else "full_attention" for k in ks], "full_attn_idxs": None,
           "num_attention_heads": 1, "num_key_value_heads": 1}
    if convs:
        c = convs.pop()
        cfg.update({"conv_L_cache": c.conv, "conv_bias": c.bias})
    if ats:
        a = ats.pop()
        if a.window is not None or a.qk_norm != "head" or not a.rope or a.rope_fraction != 1 or a.gate or \
                a.softcap or a.kv_reuse or a.scale is not None or a.qkv_bias or a.o_bias or \
                any(getattr(a, k) != 1.0 for k in ("in_scale", "key_scale", "out_scale")):
            refuse("attn", "LFM2's attention is global, full RoPE, QK-norm per head, no biases, gate or multipliers")
        cfg.update({"num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
                    "rope_parameters": {"rope_type": "default", "rope_theta": a.rope_base}})
        if a.head_dim * a.heads != model.dim:
            cfg["head_dim"] = a.head_dim
    return cfg
