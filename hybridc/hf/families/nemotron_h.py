"""NemotronH (NVIDIA, transformers' `NemotronHForCausalLM`): pre-norm blocks of one mixer each, in the order of
`layers_block_type`: Mamba-2 (`linear_attention`, Megatron's `M`), attention (`full_attention`, `*`: GQA, no
positional encoding, no biases) and the plain MLP (`mlp`, `-`: up, act, down); RMSNorm at `layer_norm_epsilon`
everywhere. The MoE block (`moe`, `E`) is refused: its router adds a learned `e_score_correction_bias` to the
sigmoid scores before top-k (DeepSeek-V3's selection bias), which hybridc's `moe` kind does not have.

.hyb: `layers mamba2 attn mlp ...`, `ffn after=none`, `mamba2 heads= head_dim= inner= state= groups= conv= chunk=
conv_bias=<use_conv_bias> proj_bias=<use_bias> dt_min=<time_step_min>` (NemotronH clamps dt at (time_step_min, inf);
it never reads time_step_limit), `attn heads= kv_heads= head_dim= rope=false window=none qk_norm=none`,
`mlp act=<mlp_hidden_act> bias=<mlp_bias> hidden=<intermediate_size>`.
Tensors: names only (the same layouts), under the checkpoints' `backbone.` (transformers renames it `model.` when it
loads): `backbone.embeddings` -> `embed`, `backbone.norm_f` -> `norm_f`, `lm_head`, `backbone.layers.i.{norm,mixer.*}`
-> `layers.i.{norm,mixer.*}` except the MLP's `{up,down}_proj` -> `{up,down}`.
Older configs' spellings are read too: `hybrid_override_pattern` ("M*M-"), `mamba_n_groups`, `mamba_d_conv`,
`mamba_dt_min`, `mamba_conv_bias`, `mamba_chunk_size` (transformers maps them the same way); `rms_norm_eps` and
`attention_head_dim`, which transformers no longer reads, only where they agree with layer_norm_epsilon and head_dim.
"""
from __future__ import annotations

from ...kinds._ffn import hidden
from ..convert import rename
from ._common import ACT_BACK, act, common_model, head, layer_names, num, only, refuse, under, zero
from .mamba2 import plain

MODEL_TYPE = "nemotron_h"
HF_CLASS = "NemotronHForCausalLM"
_MOE = "used by moe layers only, which hybridc refuses"
IGNORED = {
    "pad_token_id": "a token id (NemotronHModel's embedding has no padding_idx)",
    "num_hidden_layers": "derived: transformers takes the length of layers_block_type",
    "time_step_rank": "older configs: Mamba-2 has no dt projection of its own (dt is a slice of in_proj)",
    "max_position_embeddings": "NemotronH's attention has no positional encoding",
    "attention_bias": "NemotronHAttention's projections have no biases whatever it says",
    "sliding_window": "NemotronH's attention is global: the model never reads it",
    "use_mamba_kernels": "deprecated, no effect",
    "expand": "the Mamba width is mamba_num_heads x mamba_head_dim (the model never reads expand)",
    "mamba_expand": "older spelling of expand",
    "time_step_max": "initialisation of dt_bias",
    "mamba_dt_max": "older spelling of time_step_max",
    "time_step_floor": "initialisation of dt_bias",
    "mamba_dt_init_floor": "older spelling of time_step_floor",
    "time_step_limit": "NemotronHMamba2Mixer clamps dt at (time_step_min, inf) and never reads it",
    "mamba_dt_limit": "older spelling of time_step_limit",
    "mamba_proj_bias": "never read: in_proj/out_proj biases follow use_bias",
    "mamba_ssm_cache_dtype": "the decoding cache's storage dtype",
    "residual_in_fp32": "never read by NemotronH",
    "hidden_dropout": "never applied by transformers' NemotronH",
    "rescale_prenorm_residual": "initialisation of out_proj",
    "num_nextn_predict_layers": "multi-token prediction: transformers builds no MTP layers (mtp.* tensors unused)",
    "mtp_layers_block_type": "multi-token prediction layers (see num_nextn_predict_layers)",
    "mtp_hybrid_override_pattern": "older spelling of mtp_layers_block_type",
    **{k: _MOE for k in ("n_routed_experts", "num_local_experts", "n_shared_experts", "moe_intermediate_size",
                         "moe_shared_expert_intermediate_size", "moe_latent_size", "moe_shared_expert_overlap",
                         "num_experts_per_tok", "routed_scaling_factor", "n_group", "topk_group", "norm_topk_prob")},
}
UNUSED_TENSORS = (r"mtp\.",)  # the multi-token-prediction layers transformers does not load (`mtp.*`)
KINDS = {"linear_attention": "mamba2", "mamba": "mamba2", "full_attention": "attn", "attention": "attn", "mlp": "mlp"}
BACK = {"mamba2": "linear_attention", "attn": "full_attention", "mlp": "mlp"}
PATTERN = {"M": "linear_attention", "*": "full_attention", "-": "mlp", "E": "moe"}


def pick(cfg, key: str, old: str, default):
    """A field or its older spelling (transformers lets the older one win)."""
    return cfg.get(old) if old in cfg else cfg.get(key, default)


def block_types(cfg) -> tuple[str, list[str]]:
    """(the field it came from, each layer's transformers block type)."""
    for key in ("layers_block_type", "layer_types"):
        if key in cfg:
            types = cfg.get(key)
            if not isinstance(types, list) or not types:
                cfg.fail(key, "a non-empty list of block types")
            return key, types
    if "hybrid_override_pattern" in cfg:
        pattern = cfg.get("hybrid_override_pattern")
        if not isinstance(pattern, str) or not pattern or set(pattern) - set(PATTERN):
            cfg.fail("hybrid_override_pattern", "a string of M (Mamba-2), * (attention), - (MLP), E (MoE)")
        return "hybrid_override_pattern", [PATTERN[c] for c in pattern]
    return "layers_block_type", ["linear_attention", "moe", "full_attention", "mlp"]  # the class default


def kinds_of(cfg) -> list[str]:
    key, types = block_types(cfg)
    out = []
    for t in types:
        if t == "moe":
            cfg.fail(key, "a moe block: NemotronH's router adds a learned e_score_correction_bias to the sigmoid "
                          "scores before top-k, which hybridc's moe kind does not have")
        if t not in KINDS:
            cfg.fail(key, f"block type {t!r}: NemotronH has linear_attention, full_attention, mlp and moe blocks")
        out.append(KINDS[t])
    return out


def same(cfg, old: str, key: str, value) -> None:
    """An older field transformers no longer reads (it reads `key`): accepted only where it agrees."""
    if old in cfg and cfg.get(old) != value:
        cfg.fail(old, f"transformers' NemotronH reads {key} ({value}), not this older field: they must agree")


def to_hyb(cfg) -> str:
    d = cfg.get("hidden_size", 4096)
    eps, head_dim = cfg.get("layer_norm_epsilon", 1e-5), cfg.get("head_dim", 128)
    same(cfg, "rms_norm_eps", "layer_norm_epsilon", eps)
    same(cfg, "attention_head_dim", "head_dim", head_dim)
    vocab = cfg.get("vocab_size", 131072)
    layers = kinds_of(cfg)
    heads = cfg.get("num_attention_heads", 32)
    kv = cfg.get("num_key_value_heads", 8)
    kv = heads if kv is None else kv
    zero(cfg, "attention_dropout")
    cfg.expect("mamba_hidden_act", ("silu", "swish"), "silu", why="NemotronH's Mamba-2 conv activation: hybridc's "
                                                                   "mamba2 uses silu only")
    h, p = cfg.get("mamba_num_heads", 128), cfg.get("mamba_head_dim", 64)
    groups = pick(cfg, "n_groups", "mamba_n_groups", 8)
    if h % groups:
        cfg.fail("mamba_n_groups" if "mamba_n_groups" in cfg else "n_groups",
                 f"{groups} groups do not divide mamba_num_heads = {h}")
    return (f"dim {d}\nvocab {vocab}\noutput logits\n"
            f"tie_embeddings {num(cfg.get('tie_word_embeddings', False))}\n"
            f"norm rms eps={num(eps)}\ndropout 0\nffn after=none\n"
            f"mamba2 heads={h} head_dim={p} inner={h * p} state={cfg.get('ssm_state_size', 128)} "
            f"groups={groups} conv={pick(cfg, 'conv_kernel', 'mamba_d_conv', 4)} "
            f"chunk={pick(cfg, 'chunk_size', 'mamba_chunk_size', 128)} "
            f"conv_bias={num(pick(cfg, 'use_conv_bias', 'mamba_conv_bias', True))} "
            f"proj_bias={num(cfg.get('use_bias', False))} "
            f"dt_min={num(pick(cfg, 'time_step_min', 'mamba_dt_min', 0.001))}\n"
            f"attn heads={heads} kv_heads={kv} head_dim={head_dim} rope=false window=none "
            f"qk_norm=none\n"
            f"mlp act={act(cfg, 'mlp_hidden_act', 'relu2')} bias={num(cfg.get('mlp_bias', False))} "
            f"hidden={cfg.get('intermediate_size', 21504)}\n"
            f"layers {' '.join(layers)}\n")


def tensors(cfg, model, ours) -> list:
    maps = head(model, ours, embed="backbone.embeddings.weight", norm_f="backbone.norm_f.weight")
    for i in range(len(model.layers)):
        L = f"backbone.layers.{i}."
        maps += under(layer_names(ours, i), f"layers.{i}.mixer.", L + "mixer.",
                      {f"{w}.{b}": f"{w}_proj.{b}" for w in ("up", "down") for b in ("weight", "bias")})
        maps.append(rename(L + "norm.weight", f"layers.{i}.norm.weight"))
    return maps


def one(model, kind: str):
    """The one set of options every layer of `kind` shares (None when there is none)."""
    specs = {l.mixers[0] for l in model.layers if l.mixers[0].kind == kind}
    if len(specs) > 1:
        refuse(f"{kind} layers", f"NemotronH's {kind} layers share one set of options")
    return specs.pop() if specs else None


def attn_config(a) -> dict:
    if a.rope or a.window is not None or a.qk_norm not in ("none", False) or a.qkv_bias or a.o_bias or a.gate or \
            a.softcap or a.kv_reuse or a.scale is not None or \
            any(getattr(a, k) != 1.0 for k in ("in_scale", "key_scale", "out_scale")):
        refuse("attn", "NemotronH's attention is global, without positional encoding, QK-norm, gate or biases")
    return {"num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "head_dim": a.head_dim}


def mlp_config(f, dim: int) -> dict:
    if f.gated or f.experts or f.act not in ACT_BACK or f.gate_scale != 1 or f.down_scale != 1:
        refuse("mlp", "NemotronH's MLP is plain (up, act, down) without experts or scales")
    return {"intermediate_size": hidden(f.mult, dim, f.hidden), "mlp_hidden_act": ACT_BACK[f.act],
            "mlp_bias": f.bias}


def to_config(model) -> dict:
    common_model(model, "NemotronH")
    ks = only(model, set(BACK), "NemotronH")
    if any(layer.ffn is not None for layer in model.layers):
        refuse("ffn", "NemotronH blocks are one mixer each (an MLP is a layer of its own: `mlp`)")
    if model.norm_eps is None:
        refuse("norm eps", "NemotronH has one layer_norm_epsilon for every norm: write `norm rms eps=X`")
    if model.pad_token is not None:
        refuse(f"pad_token {model.pad_token}", "NemotronH's embedding has no padding row")
    cfg = {"vocab_size": model.vocab, "hidden_size": model.dim, "layers_block_type": [BACK[k] for k in ks],
           "tie_word_embeddings": model.tie_embeddings, "layer_norm_epsilon": model.norm_eps,
           "attention_dropout": 0.0}
    s, a, f = one(model, "mamba2"), one(model, "attn"), one(model, "mlp")
    if s is not None:
        plain(s, "NemotronH")
        if s.dt_max is not None:
            refuse(f"mamba2 dt_max={s.dt_max}", "NemotronH clamps dt at time_step_min only")
        if s.dt_min <= 0:
            refuse("mamba2 dt_min=0", "NemotronH clamps dt at time_step_min, which must be above 0 (transformers "
                                      "initialises dt_bias from its log): write dt_min=0.001, its default")
        cfg.update({"mamba_num_heads": s.heads, "mamba_head_dim": s.head_dim, "ssm_state_size": s.state,
                    "n_groups": s.groups, "conv_kernel": s.conv, "chunk_size": s.chunk, "use_conv_bias": s.conv_bias,
                    "use_bias": s.proj_bias, "time_step_min": s.dt_min, "mamba_hidden_act": "silu"})
    cfg.update(attn_config(a) if a is not None else {})
    cfg.update(mlp_config(f, model.dim) if f is not None else {})
    return cfg
