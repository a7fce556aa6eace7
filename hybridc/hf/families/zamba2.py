"""Zamba2 (Zyphra, transformers' `Zamba2ForCausalLM`): Mamba-2 layers; at the `hybrid` entries of
`layers_block_type` one of `num_mem_blocks` shared transformer blocks (used in turn: hybrid layer k runs block
k mod num_mem_blocks) reads concat(hidden, input embeddings), with per-hybrid-layer LoRA adapters on its gated MLP
(always) and on q/k/v (`use_shared_attention_adapter`); a per-layer `linear` maps its output back into that layer's
Mamba-2 input before its norm (Zamba2HybridLayer).

.hyb: a hybrid layer is two hybridc layers, the shared `attn` call site then the `mamba2` layer its output enters:
`share attn blocks=<num_mem_blocks> input=concat lora=<adapter_rank> lora_on=both|mlp into=next`, `mamba2
state= conv= inner=int(mamba_expand * hidden) heads=<n_mamba_heads> head_dim= groups= chunk= proj_bias=
<add_bias_linear> dt_min=<time_step_min>` (Zamba2MambaMixer clamps dt at time_step_limit = (time_step_min, inf);
its gated norm is fixed at eps 1e-5, which hybridc's Mamba-2 takes from `norm rms eps=`, so rms_norm_eps must be
1e-5), `attn heads= kv_heads= head_dim=2 * hidden / heads scale=(head_dim / 2) ** -0.5 window=none qk_norm=none`
with `rope=true rope_base=` under `use_mem_rope`, `ffn after=attn act=<hidden_act> gated=true bias=<add_bias_linear>`.
Tensors (transformers' layer j, p its Mamba's hybridc position, s = p - 1 its call site, k the hybrid layer's
number, b = k mod num_mem_blocks, j_b the first hybrid layer of block b, which alone stores the block):
`model.layers.j.{mamba, mamba_decoder.mamba}.*` -> `layers.p.mixer.*`, their `input_layernorm` -> `layers.p.norm`,
`model.layers.j.linear` -> `layers.s.linear`; `model.layers.j_b.shared_transformer.`: `input_layernorm` ->
`norm` (over 2D), `self_attn.{q,k,v,o}_proj` -> `mixer.*`, `pre_ff_layernorm` -> `ffn_norm`,
`feed_forward.gate_up_proj` (2F, D) split -> `ffn.gate`, `ffn.up`, `feed_forward.down_proj` -> `ffn.down`; adapters
of hybrid layer k: `self_attn.linear_{q,k,v}_adapter_list.k.{0,1}` -> `layers.s.lora.{q,k,v}_proj.{a,b}`,
`feed_forward.gate_up_proj_adapter_list.k.{0,1}` -> `layers.s.lora.ffn.{a,b}`.
"""
from __future__ import annotations


from ..convert import rename, split
from ._common import ACT_BACK, act, common_model, num, pad, refuse, rope, rope_text, zero
from .zamba import block_types, hybrid_types, layer_text, shared_parts, unshared, walk

MODEL_TYPE = "zamba2"
HF_CLASS = "Zamba2ForCausalLM"
DERIVED = "derived by Zamba2Config from other fields (recomputed on load, whatever the file says)"
IGNORED = {
    "max_position_embeddings": "RoPE's default type does not depend on it",
    "use_long_context": "sets max_position_embeddings only (RoPE's default type does not depend on it)",
    "use_mamba_kernels": "an implementation choice (same math)",
    "use_mem_eff_path": "an implementation choice (same math)",
    "use_conv_bias": "unused: Zamba2MambaMixer's conv1d always has a bias",
    "time_step_max": "initialisation of dt_bias (the checkpoint's is loaded)",
    "time_step_floor": "initialisation of dt_bias (the checkpoint's is loaded)",
    "attention_hidden_size": DERIVED, "attention_head_dim": DERIVED, "mamba_headdim": DERIVED,
    "kv_channels": DERIVED, "num_query_groups": DERIVED, "hybrid_layer_ids": DERIVED,
}
NORM_EPS = 1e-5  # Zamba2RMSNormGated's eps in Zamba2MambaMixer
DEFAULT_TYPES = (["linear_attention"] + (["linear_attention"] * 5 + ["hybrid"]) * 7 + ["linear_attention"] * 4
                 + ["hybrid"] + ["linear_attention"] * 3 + ["hybrid"] + ["linear_attention"] * 2)


def _mamba2(cfg, d: int) -> str:
    inner, heads, groups = int(cfg.get("mamba_expand", 2) * d), cfg.get("n_mamba_heads", 8), cfg.get("mamba_ngroups", 1)
    if inner % heads:
        cfg.fail("n_mamba_heads", f"must divide the Mamba-2 width int(mamba_expand x hidden_size) = {inner}")
    if heads % groups:
        cfg.fail("mamba_ngroups", f"must divide n_mamba_heads = {heads}")
    return (f"mamba2 state={cfg.get('mamba_d_state', 64)} conv={cfg.get('mamba_d_conv', 4)} inner={inner} "
            f"heads={heads} head_dim={inner // heads} groups={groups} chunk={cfg.get('chunk_size', 256)} "
            f"proj_bias={num(cfg.get('add_bias_linear', False))} dt_min={num(cfg.get('time_step_min', 0.001))}\n")


def _attn(cfg, d: int, adapters: bool) -> str:
    heads = cfg.get("num_attention_heads")
    kv = cfg.get("num_key_value_heads", None) or heads
    if adapters and kv != heads:
        cfg.fail("num_key_value_heads", "Zamba2's k/v adapters write 2 x hidden_size channels: with "
                                        "use_shared_attention_adapter it equals num_attention_heads")
    head_dim = 2 * d // heads
    theta, frac = rope(cfg)
    use_rope = cfg.get("use_mem_rope", False)
    if use_rope and frac != 1.0:
        cfg.fail("rope_parameters", "Zamba2's RoPE rotates every channel (Zamba2RotaryEmbedding reads no "
                                    "partial_rotary_factor)")
    pos = rope_text(theta, 1.0) if use_rope else "rope=false"
    return (f"attn heads={heads} kv_heads={kv} head_dim={head_dim} {pos} window=none qk_norm=none "
            f"scale={num((head_dim / 2) ** -0.5)}\n")


def to_hyb(cfg) -> str:
    d, vocab = cfg.get("hidden_size"), cfg.get("vocab_size")
    types = block_types(cfg, lambda n: list(DEFAULT_TYPES))
    eps = cfg.get("rms_norm_eps", 1e-5)
    if eps != NORM_EPS:
        cfg.fail("rms_norm_eps", f"Zamba2's Mamba-2 gated norm is fixed at eps {NORM_EPS} and hybridc's takes the "
                                 f"model's norm eps: only {NORM_EPS} is expressible")
    zero(cfg, "attention_dropout")
    adapters = cfg.get("use_shared_attention_adapter", False)
    rank = cfg.get("adapter_rank", 128)
    if not isinstance(rank, int) or rank < 1:
        cfg.fail("adapter_rank", "Zamba2's MLP always has adapters: a rank of at least 1")
    blocks = cfg.get("num_mem_blocks", 1)
    if not isinstance(blocks, int) or blocks < 1:
        cfg.fail("num_mem_blocks", "at least 1")
    tied = cfg.get("tie_word_embeddings", True)
    sites = types.count("hybrid")
    if not tied and sites > blocks:
        cfg.fail("tie_word_embeddings", "with untied embeddings transformers unties Zamba2's shared blocks too, each "
                                        "hybrid layer keeping adapters of its block's other layers unused: hybridc "
                                        "cannot hold those parameters")
    text = (f"dim {d}\nvocab {vocab}\n{pad(cfg, vocab)}output logits\ntie_embeddings {num(tied)}\n"
            f"norm rms eps={num(eps)}\ndropout 0\n"
            f"ffn after=attn act={act(cfg, 'hidden_act', 'gelu')} gated=true "
            f"bias={num(cfg.get('add_bias_linear', False))} hidden={cfg.get('intermediate_size', None) or 4 * d}\n"
            + _mamba2(cfg, d) + _attn(cfg, d, adapters) + layer_text(types, "mamba2"))
    if not sites:
        return text
    return text + (f"share attn blocks={min(blocks, sites)} input=concat lora={rank} "
                   f"lora_on={'both' if adapters else 'mlp'} into=next\n")


def tensors(cfg, model, ours) -> list:
    ours = list(ours)
    maps = [rename("model.embed_tokens.weight", "embed.weight"),
            rename("model.final_layernorm.weight", "norm_f.weight")]
    if "lm_head.weight" in ours:
        maps.append(rename("lm_head.weight", "lm_head.weight"))
    home = {}  # block -> transformers' layer that stores it (its first hybrid layer)
    for i, j, role in walk(model):
        L, o = f"model.layers.{j}.", f"layers.{i}."
        mine = [n for n in ours if n.startswith(o)]
        if role != "site":
            M = L + ("mamba_decoder." if role == "hybrid" else "")
            maps += [rename(M + "mamba." + n[len(o + "mixer."):], n) for n in mine if n.startswith(o + "mixer.")]
            maps.append(rename(M + "input_layernorm.weight", o + "norm.weight"))
            continue
        site = model.layers[i].site
        S = f"model.layers.{home.setdefault(site.block, j)}.shared_transformer."
        maps += _site(S, L, o, site.index, mine, model.layers[i].ffn)
    return maps


def _site(S: str, L: str, o: str, k: int, mine: list[str], ffn) -> list:
    """One call site: its linear and adapters, and its block's tensors where hybridc stores them (the first site)."""
    table = {o + "linear.weight": L + "linear.weight", o + "norm.weight": S + "input_layernorm.weight",
             o + "ffn_norm.weight": S + "pre_ff_layernorm.weight",
             o + "ffn.down.weight": S + "feed_forward.down_proj.weight",
             o + "ffn.down.bias": S + "feed_forward.down_proj.bias"}
    for w in "qkv":
        for x, y in (("a", "0"), ("b", "1")):
            table[o + f"lora.{w}_proj.{x}.weight"] = S + f"self_attn.linear_{w}_adapter_list.{k}.{y}.weight"
    table.update({o + f"lora.ffn.{x}.weight": S + f"feed_forward.gate_up_proj_adapter_list.{k}.{y}.weight"
                  for x, y in (("a", "0"), ("b", "1"))})
    maps = [rename(table[n], n) for n in mine if n in table]
    maps += [rename(S + "self_attn." + n[len(o + "mixer."):], n) for n in mine if n.startswith(o + "mixer.")]
    for b in ("weight", "bias"):
        if o + f"ffn.gate.{b}" in mine:
            maps.append(split(S + f"feed_forward.gate_up_proj.{b}", (o + f"ffn.gate.{b}", o + f"ffn.up.{b}"),
                              (ffn.hidden, ffn.hidden)))
    return maps


def to_config(model) -> dict:
    common_model(unshared(model), "Zamba2")
    types = hybrid_types(model, "Zamba2", "mamba2")
    if model.norm_eps != NORM_EPS:
        refuse("norm", f"Zamba2's norms are RMSNorms at eps {NORM_EPS} (`norm rms eps={NORM_EPS}`)")
    mb = {l.mixers[0] for l in model.layers if l.site is None}
    if len(mb) != 1:
        refuse("layer options", "Zamba2's Mamba-2 layers share one set of options")
    s = mb.pop()
    if not s.out_norm or s.norm_before_gate or not s.conv_bias or s.dt_max is not None or \
            any(getattr(s, k) != 1.0 for k in ("in_scale", "out_scale", "z_scale", "x_scale", "b_scale", "c_scale",
                                               "dt_scale")):
        refuse("mamba2", "Zamba2's Mamba-2 has the gated norm after the gate, a conv bias, dt clamped below only, "
                         "no multipliers")
    cfg = {"vocab_size": model.vocab, "hidden_size": model.dim, "num_hidden_layers": len(types),
           "layers_block_type": types, "tie_word_embeddings": model.tie_embeddings, "rms_norm_eps": NORM_EPS,
           "pad_token_id": getattr(model, "pad_token", None), "attention_dropout": 0.0,
           "mamba_d_state": s.state, "mamba_d_conv": s.conv, "mamba_expand": s.inner / model.dim,
           "n_mamba_heads": s.heads, "mamba_ngroups": s.groups, "chunk_size": s.chunk, "add_bias_linear": s.proj_bias,
           "time_step_min": s.dt_min}
    if cfg["mamba_expand"] == int(cfg["mamba_expand"]):
        cfg["mamba_expand"] = int(cfg["mamba_expand"])
    if int(cfg["mamba_expand"] * model.dim) != s.inner:
        refuse("mamba2 inner", "Zamba2's Mamba-2 width is int(mamba_expand x hidden_size)")
    cfg.update(_shared_config(model, s.proj_bias))
    return cfg


def _shared_config(model, bias: bool) -> dict:
    sites = [l.site for l in model.layers if l.site is not None]
    a, f = shared_parts(model, "Zamba2", ffn_bias=bias)
    if a is None:
        return {"num_attention_heads": 1, "num_key_value_heads": 1, "intermediate_size": 4 * model.dim,
                "hidden_act": "gelu"}
    site = sites[0]
    if site.lora < 1 or site.lora_on == "attn":
        refuse("share lora", "Zamba2's shared MLP always has per-layer adapters (`lora=R lora_on=mlp|both`)")
    if not model.tie_embeddings and len(sites) > site.blocks:
        refuse("tie_embeddings", "Zamba2 with untied embeddings has one block per hybrid layer (with unused adapter "
                                 "copies): `tie_embeddings true`, or as many blocks as call sites")
    if a.head_dim * a.heads != 2 * model.dim or (a.rope and a.rope_fraction != 1.0):
        refuse("attn", "Zamba2's attention has head_dim = 2 x dim / heads and RoPE (if any) on every channel")
    if site.lora_attn and a.kv_heads != a.heads:
        refuse("attn kv_heads", "Zamba2's k/v adapters need kv_heads = heads")
    out = {"num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "intermediate_size": f.hidden,
           "hidden_act": ACT_BACK[f.act], "num_mem_blocks": site.blocks, "adapter_rank": site.lora,
           "use_shared_attention_adapter": site.lora_attn, "use_mem_rope": a.rope}
    out["rope_parameters"] = {"rope_type": "default", "rope_theta": a.rope_base}
    return out
