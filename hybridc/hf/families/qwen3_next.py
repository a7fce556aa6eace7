"""Qwen3-Next (Qwen, transformers' `Qwen3NextForCausalLM`): Gated DeltaNet layers (`linear_attention`) and gated
attention layers (`full_attention`), each followed by a SwiGLU MLP or a sparse MoE with one sigmoid-gated shared
expert; zero-centred RMSNorms `(1 + w)` at `rms_norm_eps` (the deltanet's gated output norm is plain `w`).

.hyb: `layers gated_delta_net attn ...` (`layer_types`, or every `full_attention_interval`-th layer attention),
`norm rms eps= zero_centered=true`, `ffn act= gated=true bias=false hidden=<intermediate_size>` with
`at N,.. ffn experts= top_k= hidden=<moe_intermediate_size> router=softmax renorm=<norm_topk_prob> shared_experts=1
shared_hidden= shared_gate=true` on the MoE layers (i not in `mlp_only_layers`, `(i + 1) % decoder_sparse_step == 0`),
`gated_delta_net heads=<linear_num_key_heads> v_heads= head_dim= v_head_dim= conv= gate=true`,
`attn heads= kv_heads= head_dim= rope=true rope_fraction=<partial_rotary_factor, default 0.25> gate=true qk_norm=head
window=none`. `hidden_act` is also the deltanet's conv activation (hybridc's is silu: others are refused there).
Tensors: `linear_attn.in_proj_qkvz` (H (2K + 2rV), D) is per key head `[q (K), k (K), v (r V), z (r V)]` (r value heads
per key head; z is our `g_proj`), `in_proj_ba` per key head `[b (r), a (r)]`, `conv1d` channels `[q, k, v]` (our three
convs), `norm` -> `o_norm`, `out_proj` -> `o_proj`; `self_attn.*` -> `mixer.*` (q_proj holds [q, gate] per head, as
ours); `mlp.{gate,up,down}_proj` -> `ffn.*`; MoE: `mlp.gate` -> `ffn.router`, `mlp.experts.{e}.{gate,up,down}_proj`
stacked -> `ffn.experts.{gate_up,down}_proj`, `mlp.shared_expert.*` -> `ffn.shared.*`, `mlp.shared_expert_gate` ->
`ffn.shared_gate`.
"""
from __future__ import annotations

from ..convert import Map, rename, split
from ._common import (ACT_BACK, act, common_model, head, layer_names, num, only, pad, refuse, rope, rope_config,
                      rope_text, stacked_experts, under, zero)
from ...kinds._ffn import moe_widths

MODEL_TYPE = "qwen3_next"
HF_CLASS = "Qwen3NextForCausalLM"
IGNORED = {
    "max_position_embeddings": "RoPE's default type does not depend on it",
    "use_sliding_window": "transformers' Qwen3-Next never reads it (its attention has no window)",
    "sliding_window": "transformers' Qwen3-Next never reads it (its attention has no window)",
    "max_window_layers": "transformers' Qwen3-Next never reads it (its attention has no window)",
    "mtp_num_hidden_layers": "the multi-token-prediction head, which transformers does not build (no logits change)",
    "mtp_use_dedicated_embeddings": "the multi-token-prediction head, which transformers does not build",
}
UNUSED_TENSORS = (r"mtp\.",)  # the multi-token-prediction head: transformers does not load it either
KINDS = {"linear_attention": "gated_delta_net", "full_attention": "attn"}


def layer_kinds(cfg, n: int) -> list[str]:
    types = cfg.get("layer_types", None)
    interval = cfg.get("full_attention_interval", 4)  # transformers' older spelling, used when layer_types is absent
    if types is None:
        if not isinstance(interval, int) or interval < 1:
            cfg.fail("full_attention_interval", "a positive layer count")
        types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n)]
    if not isinstance(types, list) or len(types) != n or any(t not in KINDS for t in types):
        cfg.fail("layer_types", f"{n} entries (num_hidden_layers), each linear_attention or full_attention")
    return [KINDS[t] for t in types]


def moe_layers(cfg, n: int) -> tuple[list[int], str]:
    """The 0-based MoE layers and their `ffn` options (empty without experts)."""
    e = cfg.get("num_experts", 512)
    k = cfg.get("num_experts_per_tok", 10)
    f = cfg.get("moe_intermediate_size", 512)
    s = cfg.get("shared_expert_intermediate_size", 512)
    renorm = cfg.get("norm_topk_prob", True)
    step = cfg.get("decoder_sparse_step", 1)
    dense = cfg.get("mlp_only_layers", None) or []
    if not e:
        return [], ""
    if not isinstance(step, int) or step < 1:
        cfg.fail("decoder_sparse_step", "a positive layer count (MoE every step-th layer)")
    if not isinstance(k, int) or not 1 <= k <= e:
        cfg.fail("num_experts_per_tok", f"between 1 and num_experts = {e}")
    if not isinstance(s, int) or s < 1:
        cfg.fail("shared_expert_intermediate_size", "hybridc's shared expert has a width of at least 1")
    at = [i for i in range(n) if i not in dense and (i + 1) % step == 0]
    shared = "" if s == f else f" shared_hidden={s}"  # the auto width (shared_experts x hidden) when equal
    return at, (f"experts={e} top_k={k} hidden={f} router=softmax renorm={num(bool(renorm))} shared_experts=1"
                f"{shared} shared_gate=true")


def to_hyb(cfg) -> str:
    d, vocab, n = cfg.get("hidden_size", 2048), cfg.get("vocab_size", 151936), cfg.get("num_hidden_layers", 48)
    kinds = layer_kinds(cfg, n)
    zero(cfg, "attention_dropout")
    a = act(cfg, "hidden_act", "silu")
    if a != "silu" and "gated_delta_net" in kinds:
        cfg.fail("hidden_act", "Qwen3-Next's Gated DeltaNet applies hidden_act after its short convolution, where "
                               "hybridc's is silu")
    heads, kv, hd = (cfg.get("num_attention_heads", 16), cfg.get("num_key_value_heads", 2),
                     cfg.get("head_dim", 256))
    theta, frac = rope(cfg, default_fraction=0.25)
    if "attn" in kinds and (int(hd * frac) < 2 or int(hd * frac) % 2):
        cfg.fail("rope_parameters", f"partial_rotary_factor {frac} rotates {int(hd * frac)} of head_dim {hd} "
                                    "channels: hybridc rotates an even count of at least 2")
    bias = num(cfg.get("attention_bias", False))
    h, hv = cfg.get("linear_num_key_heads", 16), cfg.get("linear_num_value_heads", 32)
    if hv % h:
        cfg.fail("linear_num_value_heads", f"a multiple of linear_num_key_heads = {h}")
    moe_at, moe = moe_layers(cfg, n)
    at = f"at {','.join(str(i + 1) for i in moe_at)} ffn {moe}\n" if moe_at else ""
    return (f"dim {d}\nvocab {vocab}\n{pad(cfg, vocab)}output logits\n"
            f"tie_embeddings {num(cfg.get('tie_word_embeddings', False))}\n"
            f"norm rms eps={num(cfg.get('rms_norm_eps', 1e-6))} zero_centered=true\ndropout 0\n"
            f"ffn after=all act={a} gated=true bias=false hidden={cfg.get('intermediate_size', 5632)}\n"
            f"gated_delta_net heads={h} v_heads={hv} head_dim={cfg.get('linear_key_head_dim', 128)} "
            f"v_head_dim={cfg.get('linear_value_head_dim', 128)} conv={cfg.get('linear_conv_kernel_dim', 4)} "
            f"gate=true neg_eigval=false\n"
            f"attn heads={heads} kv_heads={kv} head_dim={hd} {rope_text(theta, frac)} gate=true qk_norm=head "
            f"window=none qkv_bias={bias} o_bias={bias}\n"
            f"layers {' '.join(kinds)}\n{at}")


def per_head(hf: str, ours: list[str], heads: int, sizes: list[int]) -> Map:
    """A projection whose rows are, per key head, the pieces `sizes` of each of `ours` (Qwen3-Next's in_proj_qkvz
    and in_proj_ba) <-> our separate projections (all of one piece's heads together)."""
    per = sum(sizes)

    def to_ours(xp, ts):
        d = xp.shape(ts[0])[-1]
        parts = xp.split(xp.reshape(ts[0], (heads, per, d)), tuple(sizes), 1)
        return [xp.reshape(p, (heads * s, d)) for p, s in zip(parts, sizes)]

    def to_hf(xp, ts):
        d = xp.shape(ts[0])[-1]
        return [xp.reshape(xp.cat([xp.reshape(t, (heads, s, d)) for t, s in zip(ts, sizes)], 1), (heads * per, d))]

    return Map((hf,), tuple(ours), to_ours, to_hf)


def deltanet(spec, hf: str, ours: str) -> list:
    h, hv, k = spec.heads, spec.v_heads, spec.head_dim
    v = spec.v_head_dim or spec.expand_v * k
    r = hv // h
    return [per_head(hf + "in_proj_qkvz.weight", [ours + f"{p}_proj.weight" for p in "qkvg"], h, [k, k, r * v, r * v]),
            per_head(hf + "in_proj_ba.weight", [ours + "b_proj.weight", ours + "a_proj.weight"], h, [r, r]),
            split(hf + "conv1d.weight", [ours + f"{p}_conv1d.weight" for p in "qkv"], [h * k, h * k, hv * v]),
            rename(hf + "norm.weight", ours + "o_norm.weight"), rename(hf + "out_proj.weight", ours + "o_proj.weight"),
            rename(hf + "A_log", ours + "A_log"), rename(hf + "dt_bias", ours + "dt_bias")]


def tensors(cfg, model, ours) -> list:
    maps = head(model, ours)
    for i, layer in enumerate(model.layers):
        names, L, o = layer_names(ours, i), f"model.layers.{i}.", f"layers.{i}."
        spec = layer.mixers[0]
        if spec.kind == "attn":
            maps += under(names, o + "mixer.", L + "self_attn.")
        else:
            maps += deltanet(spec, L + "linear_attn.", o + "mixer.")
        maps += [rename(L + "input_layernorm.weight", o + "norm.weight"),
                 rename(L + "post_attention_layernorm.weight", o + "ffn_norm.weight")]
        if layer.ffn.experts:
            maps += [rename(L + "mlp.gate.weight", o + "ffn.router.weight"),
                     rename(L + "mlp.shared_expert_gate.weight", o + "ffn.shared_gate.weight")]
            maps += stacked_experts(L + "mlp.experts.{e}.{w}_proj.weight", layer.ffn.experts, o + "ffn.experts")
            maps += [rename(L + f"mlp.shared_expert.{w}_proj.weight", o + f"ffn.shared.{w}.weight")
                     for w in ("gate", "up", "down")]
        else:
            maps += [rename(L + f"mlp.{w}_proj.weight", o + f"ffn.{w}.weight") for w in ("gate", "up", "down")]
    return maps


def _one(specs, part: str):
    if len(set(specs)) > 1:
        refuse(part, "Qwen3-Next's layers of one kind share one set of options")
    return specs[0] if specs else None


def _ffn_config(model) -> dict:
    ffns = [l.ffn for l in model.layers]
    if None in ffns:
        refuse("ffn", "Qwen3-Next has an MLP or MoE after every layer")
    for f in ffns:
        if not f.gated or f.bias or f.act not in ACT_BACK or f.gate_scale != 1 or f.down_scale != 1 or f.token_shift:
            refuse("ffn", "Qwen3-Next's MLPs are gated, without biases or scales")
    if len({f.act for f in ffns}) > 1:
        refuse("ffn act", "Qwen3-Next has one hidden_act")
    dense = _one([f for f in ffns if not f.experts], "ffn (dense layers)")
    moe = _one([f for f in ffns if f.experts], "ffn (MoE layers)")
    cfg = {"hidden_act": ACT_BACK[ffns[0].act], "intermediate_size": dense.hidden if dense else None,
           "num_experts": moe.experts if moe else 0, "decoder_sparse_step": 1,
           "mlp_only_layers": [i for i, f in enumerate(ffns) if not f.experts] if moe else []}
    if dense is not None and dense.hidden is None:
        cfg["intermediate_size"] = moe_widths(dense, model.dim)[0]
    if moe is not None:
        width, shared = moe_widths(moe, model.dim)
        if moe.router != "softmax" or moe.shared_experts != 1 or not moe.shared_gate:
            refuse("ffn experts", "Qwen3-Next's MoE routes by softmax and has one sigmoid-gated shared expert "
                                  "(shared_experts=1 shared_gate=true)")
        cfg.update({"num_experts_per_tok": moe.top_k, "norm_topk_prob": moe.renorm, "moe_intermediate_size": width,
                    "shared_expert_intermediate_size": shared})
        if cfg["intermediate_size"] is None:
            cfg["intermediate_size"] = width  # unused: every layer is MoE
    return cfg


def to_config(model) -> dict:
    common_model(model, "Qwen3-Next", zero_centered=True)
    ks = only(model, {"gated_delta_net", "attn"}, "Qwen3-Next")
    if model.norm_eps is None:
        refuse("norm eps", "Qwen3-Next's norms share one rms_norm_eps (write `norm rms eps=...`)")
    gdn = _one([l.mixers[0] for l in model.layers if l.mixers[0].kind == "gated_delta_net"], "gated_delta_net")
    att = _one([l.mixers[0] for l in model.layers if l.mixers[0].kind == "attn"], "attn")
    cfg = {"vocab_size": model.vocab, "hidden_size": model.dim, "num_hidden_layers": len(model.layers),
           "tie_word_embeddings": model.tie_embeddings, "rms_norm_eps": model.norm_eps,
           "pad_token_id": model.pad_token, "attention_dropout": 0.0,
           "layer_types": ["full_attention" if k == "attn" else "linear_attention" for k in ks], **_ffn_config(model)}
    if gdn is not None:
        if not gdn.gate or gdn.neg_eigval:
            refuse("gated_delta_net", "Qwen3-Next's Gated DeltaNet has the gated output norm and beta in (0, 1)")
        if cfg["hidden_act"] != "silu":
            refuse("ffn act", "Qwen3-Next's hidden_act is also its Gated DeltaNet's conv activation, silu in hybridc")
        cfg.update({"linear_num_key_heads": gdn.heads, "linear_num_value_heads": gdn.v_heads,
                    "linear_key_head_dim": gdn.head_dim, "linear_value_head_dim": gdn.v_head_dim or
                    gdn.expand_v * gdn.head_dim, "linear_conv_kernel_dim": gdn.conv})
    if att is not None:
        if att.window is not None or att.qk_norm != "head" or not att.rope or not att.gate or att.softcap or \
                att.kv_reuse or att.scale is not None or att.qkv_bias != att.o_bias or \
                any(getattr(att, k) != 1.0 for k in ("in_scale", "key_scale", "out_scale")):
            refuse("attn", "Qwen3-Next's attention is global, RoPE, gated, QK-normed per head, scale 1/sqrt(head_dim)")
        cfg.update({"num_attention_heads": att.heads, "num_key_value_heads": att.kv_heads, "head_dim": att.head_dim,
                    "attention_bias": att.qkv_bias, **rope_config(att)})
    return cfg
