"""Zamba (Zyphra, transformers' `ZambaForCausalLM`): multi-head Mamba-1 layers; at the `hybrid` entries of
`layers_block_type` one shared transformer block (attention + gated MLP, no residuals) reads concat(hidden, input
embeddings), a per-layer `linear` maps its output back, and the result enters that layer's Mamba input before its
norm (ZambaHybridLayer).

.hyb: a hybrid layer is two hybridc layers, the shared `attn` call site then the `mamba` layer its output enters:
`layers mamba mamba attn mamba ...`, `share attn input=concat into=next` (`blocks=<hybrid layers>` with untied
embeddings: transformers then unties the shared blocks too), `mamba state= expand= conv= dt_rank= heads=
<n_mamba_heads> proj_bias= conv_bias=`, `attn heads= kv_heads= head_dim=<attention_head_dim> rope=false window=none
qk_norm=none scale=(head_dim / 2) ** -0.5` (ZambaAttention's), `ffn after=attn act=<hidden_act> gated=true
bias=false hidden=<intermediate_size>`.
Tensors (transformers' layer j, p its Mamba's hybridc position, s = p - 1 its call site): `model.embed_tokens` ->
`embed`, `model.final_layernorm` -> `norm_f`; `model.layers.j.{mamba, mamba_decoder.mamba}.*` -> `layers.p.mixer.*`
(per-head `x_proj_weight` (H, R + 2N, P), `dt_proj_weight`, `dt_proj_bias`, `A_log`, `D`; with one head reshaped to
hybridc's single-head `x_proj.weight` ..., and in_proj's interleaved x/z rows put in [x; z] order), their
`input_layernorm` -> `layers.p.norm`; `model.layers.j.linear` -> `layers.s.linear`; the shared block (stored once, at
the first hybrid layer, transformers tying the others to it; each hybrid layer's own with untied embeddings):
`shared_transf.input_layernorm` -> `layers.s.norm` (over 2D), `self_attn.*` -> `mixer.*`, `pre_ff_layernorm` ->
`ffn_norm`, `feed_forward.{gate,up,down}_proj` -> `ffn.{gate,up,down}`.
"""
from __future__ import annotations

import math

from ..convert import rename, take, transform
from ._common import ACT_BACK, act, common_model, num, pad, refuse, zero

MODEL_TYPE = "zamba"
HF_CLASS = "ZambaForCausalLM"
IGNORED = {
    "max_position_embeddings": "Zamba has no positional encoding",
    "use_mamba_kernels": "an implementation choice (same math)",
    "use_associative_scan": "an implementation choice (same math)",
    "time_step_min": "initialisation of dt_proj_bias (the checkpoint's is loaded)",
    "time_step_max": "initialisation of dt_proj_bias (the checkpoint's is loaded)",
    "time_step_floor": "initialisation of dt_proj_bias (the checkpoint's is loaded)",
}
TYPES = {"mamba": "linear_attention", "linear_attention": "linear_attention", "hybrid": "hybrid"}


def block_types(cfg, default) -> list[str]:
    """`layers_block_type` (legacy `mamba` read as `linear_attention`), or `default(n)` when the config has none."""
    n = cfg.get("num_hidden_layers")
    types = cfg.get("layers_block_type", None)
    if types is None:
        return default(n)
    if not isinstance(types, list) or any(t not in TYPES for t in types):
        cfg.fail("layers_block_type", "a list of \"hybrid\" and \"linear_attention\" (or legacy \"mamba\")")
    if len(types) != n:
        cfg.fail("layers_block_type", f"{len(types)} entries, but num_hidden_layers is {n}")
    return [TYPES[t] for t in types]


def layer_text(types: list[str], mixer: str) -> str:
    return "layers " + " ".join(f"attn {mixer}" if t == "hybrid" else mixer for t in types) + "\n"


def to_hyb(cfg) -> str:
    d, vocab = cfg.get("hidden_size"), cfg.get("vocab_size")
    period, offset = cfg.get("attn_layer_period", 6), cfg.get("attn_layer_offset", 4)
    types = block_types(cfg, lambda n: ["linear_attention"] * 2 + ["hybrid"] + [
        "hybrid" if i % period == offset else "linear_attention" for i in range(n - 3)])
    heads = cfg.get("num_attention_heads")
    kv = cfg.get("num_key_value_heads", None) or heads
    if cfg.get("attention_hidden_size", None) not in (None, 2 * d):
        cfg.fail("attention_hidden_size", f"ZambaAttentionDecoderLayer reads concat(hidden, embeddings): 2 x "
                                          f"hidden_size = {2 * d}")
    head_dim = cfg.get("attention_head_dim", None) or 2 * d // heads
    zero(cfg, "attention_dropout")
    if cfg.get("hidden_mamba_act", "silu") not in ("silu", "swish"):
        cfg.fail("hidden_mamba_act", "hybridc's Mamba has SiLU only")
    expand = cfg.get("mamba_expand", 2)
    if not isinstance(expand, int):
        cfg.fail("mamba_expand", "ZambaMambaMixer's inner width is mamba_expand * hidden_size: an integer here")
    dt_rank = cfg.get("mamba_dt_rank", "auto")
    if dt_rank == "auto":
        dt_rank = math.ceil(d / 16)
    text = (f"dim {d}\nvocab {vocab}\n{pad(cfg, vocab)}output logits\n"
            f"tie_embeddings {num(cfg.get('tie_word_embeddings', True))}\n"
            f"norm rms eps={num(cfg.get('rms_norm_eps', 1e-5))}\ndropout 0\n"
            f"ffn after=attn act={act(cfg, 'hidden_act', 'gelu')} gated=true bias=false "
            f"hidden={cfg.get('intermediate_size')}\n"
            f"mamba state={cfg.get('mamba_d_state', 16)} expand={expand} conv={cfg.get('mamba_d_conv', 4)} "
            f"dt_rank={dt_rank} heads={cfg.get('n_mamba_heads', 2)} "
            f"proj_bias={num(cfg.get('mamba_proj_bias', False))} conv_bias={num(cfg.get('mamba_conv_bias', True))}\n"
            f"attn heads={heads} kv_heads={kv} head_dim={head_dim} rope=false window=none qk_norm=none "
            f"scale={num((head_dim / 2) ** -0.5)}\n" + layer_text(types, "mamba"))
    sites = types.count("hybrid")
    if not sites:
        return text
    # transformers ties the shared blocks only when it ties the embeddings (PreTrainedModel's tied-weights keys are
    # dropped with tie_word_embeddings=false): then each hybrid layer has its own block
    blocks = 1 if cfg.get("tie_word_embeddings", True) else sites
    return text + f"share attn blocks={blocks} input=concat into=next\n"


def walk(model):
    """(hybridc index, transformers layer j, role) for each hybridc layer: role "site" for a shared block's call
    site (part of transformers' hybrid layer j), "hybrid" for the Mamba it feeds, "mamba" for a plain one."""
    j, out = 0, []
    for i, layer in enumerate(model.layers):
        if layer.site is not None:
            out.append((i, j, "site"))
            continue
        out.append((i, j, "hybrid" if i > 0 and model.layers[i - 1].site is not None else "mamba"))
        j += 1
    return out


def _single_head(hf: str, ours: str) -> object:
    """ZambaMambaMixer's per-head tensor with one head (1, ...) <-> hybridc's single-head one (...)."""
    return transform(hf, ours, lambda xp, t: xp.reshape(t, tuple(xp.shape(t))[1:]),
                     lambda xp, t: xp.reshape(t, (1,) + tuple(xp.shape(t))))


def _deinterleave(hf: str, ours: str, width: int) -> object:
    """ZambaMambaMixer's in_proj rows interleave x and z (`view(B, -1, 2, L)`: row 2c is x_c, 2c + 1 is z_c), as
    hybridc's multi-head Mamba reads them; its single-head Mamba (mamba_ssm's) reads [x; z]."""
    return take(hf, ours, [2 * c for c in range(width)] + [2 * c + 1 for c in range(width)])


def mixer_maps(ours, i: int, hf_prefix: str, single: dict | None = None, width: int = 0) -> list:
    """`layers.i.mixer.*` -> `hf_prefix*`, with `single` {our suffix: their suffix} reshaped and in_proj's rows
    de-interleaved (one head, inner `width`)."""
    single = single or {}
    pre, out = f"layers.{i}.mixer.", []
    for n in ours:
        if n.startswith(pre):
            rest = n[len(pre):]
            if rest in single:
                out.append(_single_head(hf_prefix + single[rest], n))
            elif single and rest.startswith("in_proj."):
                out.append(_deinterleave(hf_prefix + rest, n, width))
            else:
                out.append(rename(hf_prefix + rest, n))
    return out


SINGLE = {"x_proj.weight": "x_proj_weight", "dt_proj.weight": "dt_proj_weight", "dt_proj.bias": "dt_proj_bias",
          "A_log": "A_log", "D": "D"}


def tensors(cfg, model, ours) -> list:
    ours = list(ours)
    maps = [rename("model.embed_tokens.weight", "embed.weight"),
            rename("model.final_layernorm.weight", "norm_f.weight")]
    if "lm_head.weight" in ours:
        maps.append(rename("lm_head.weight", "lm_head.weight"))
    for i, j, role in walk(model):
        L, o = f"model.layers.{j}.", f"layers.{i}."
        if role == "site":
            S = L + "shared_transf."
            table = {o + "linear.weight": L + "linear.weight", o + "norm.weight": S + "input_layernorm.weight",
                     o + "ffn_norm.weight": S + "pre_ff_layernorm.weight"}
            table.update({o + f"ffn.{w}.weight": S + f"feed_forward.{w}_proj.weight" for w in ("gate", "up", "down")})
            maps += [rename(table[n], n) for n in ours if n in table]
            maps += [rename(S + "self_attn." + n[len(o + "mixer."):], n) for n in ours if n.startswith(o + "mixer.")]
            continue
        M = L + ("mamba_decoder." if role == "hybrid" else "")
        spec = model.layers[i].mixers[0]
        maps += mixer_maps(ours, i, M + "mamba.", SINGLE if spec.heads == 1 else None, spec.width(model.dim))
        maps.append(rename(M + "input_layernorm.weight", o + "norm.weight"))
    return maps


def unshared(model):
    """The model with its call sites as plain layers (for `common_model`'s model-level checks)."""
    return model.model_copy(update={"layers": tuple(l.model_copy(update={"shared": False, "site": None})
                                                    for l in model.layers)})


def hybrid_types(model, family: str, mixer: str) -> list[str]:
    """`layers_block_type` of a model whose layers are `mixer` layers and shared-block call sites, each site just
    before the `mixer` layer its output enters; anything else refused by name."""
    types = []
    for i, layer in enumerate(model.layers):
        k = "+".join(m.kind for m in layer.mixers)
        if layer.site is not None:
            if k != "attn" or layer.site.input != "concat" or layer.site.into != "next":
                refuse(f"layer {i + 1} (shared {k})", f"{family}'s shared block is attention reading concat(hidden, "
                                                      "embeddings) whose output enters the next layer")
            nxt = model.layers[i + 1] if i + 1 < len(model.layers) else None
            if nxt is None or nxt.site is not None or nxt.mixers[0].kind != mixer:
                refuse(f"layer {i + 1} (shared attn)", f"{family}'s shared block feeds a {mixer} layer")
            continue
        if k != mixer or layer.shared or layer.ffn is not None:
            refuse(f"layer {i + 1} ({k})", f"{family} has {mixer} layers without FFNs and shared attention blocks")
        types.append("hybrid" if i > 0 and model.layers[i - 1].site is not None else "linear_attention")
    return types


def shared_parts(model, family: str, ffn_bias: bool = False):
    """(attention spec, FFN spec) of the shared block, refusing what the family's has not."""
    sites = [l for l in model.layers if l.site is not None]
    if not sites:
        return None, None
    if len({(l.mixers[0], l.ffn) for l in sites}) > 1:  # pragma: no cover -- a shared block has one spec
        refuse("share", f"{family}'s shared blocks have one set of options")
    a, f = sites[0].mixers[0], sites[0].ffn
    if f is None or not f.gated or f.bias != ffn_bias or f.experts or f.act not in ACT_BACK or f.gate_scale != 1 or \
            f.down_scale != 1:
        refuse("ffn", f"{family}'s shared block ends in a gated MLP without experts or scales, with biases "
                      f"{'on' if ffn_bias else 'off'}")
    if a.window is not None or a.qk_norm not in ("none", False) or a.gate or a.softcap or a.kv_reuse or \
            a.qkv_bias or a.o_bias or a.scale != (a.head_dim / 2) ** -0.5 or \
            any(getattr(a, k) != 1.0 for k in ("in_scale", "key_scale", "out_scale")):
        refuse("attn", f"{family}'s attention is global, no QK-norm, gate or biases, scale (head_dim / 2) ** -0.5")
    return a, f


def to_config(model) -> dict:
    common_model(unshared(model), "Zamba")
    types = hybrid_types(model, "Zamba", "mamba")
    if model.norm_eps is None:
        refuse("norm", "Zamba's RMSNorms have an explicit eps (`norm rms eps=E`)")
    sites = [l.site for l in model.layers if l.site is not None]
    if any(s.lora for s in sites):
        refuse("share lora", "Zamba's shared block has no adapters (Zamba2's has)")
    if len(sites) > 1 and any(s.blocks != (1 if model.tie_embeddings else len(sites)) for s in sites):
        refuse("share blocks", "Zamba ties its shared blocks exactly when it ties the embeddings: one block with "
                               "`tie_embeddings true`, one per call site without")
    a, f = shared_parts(model, "Zamba")
    if a is not None and a.rope:
        refuse("attn", "Zamba's attention has no positional encoding")
    mb = {l.mixers[0] for l in model.layers if l.site is None}
    if len(mb) != 1:
        refuse("layer options", "Zamba's Mamba layers share one set of options")
    s = mb.pop()
    if s.inner is not None or s.inner_norm != "none":
        refuse("mamba", "Zamba's Mamba has inner = expand * dim and no dt/B/C norms")
    cfg = {"vocab_size": model.vocab, "hidden_size": model.dim, "num_hidden_layers": len(types),
           "layers_block_type": types, "tie_word_embeddings": model.tie_embeddings, "rms_norm_eps": model.norm_eps,
           "pad_token_id": getattr(model, "pad_token", None), "attention_dropout": 0.0, "hidden_mamba_act": "silu",
           "mamba_d_state": s.state, "mamba_d_conv": s.conv, "mamba_expand": s.expand, "mamba_dt_rank": s.dt_rank,
           "n_mamba_heads": s.heads, "mamba_conv_bias": s.conv_bias, "mamba_proj_bias": s.proj_bias,
           "attention_hidden_size": 2 * model.dim}
    if a is None:
        cfg.update({"num_attention_heads": 1, "num_key_value_heads": 1, "attention_head_dim": 2 * model.dim,
                    "intermediate_size": 4 * model.dim, "hidden_act": "gelu"})
    else:
        cfg.update({"num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "attention_head_dim": a.head_dim,
                    "intermediate_size": f.hidden, "hidden_act": ACT_BACK[f.act]})
    return cfg
