"""Mamba-2 (Dao & Gu, transformers' `Mamba2ForCausalLM`): a stack of pre-norm Mamba-2 (SSD) blocks, RMSNorm at
`layer_norm_epsilon` everywhere (block, final and the mixer's groupwise gated norm), an untied head by default.

.hyb: `layers mamba2 xN`, `mamba2 heads= head_dim= inner=heads*head_dim state= groups= conv= chunk=
proj_bias=<use_bias> conv_bias=<use_conv_bias> dt_min= dt_max=` (time_step_limit clamps dt after softplus),
`norm rms eps=<layer_norm_epsilon>`.
Tensors: names only (the layouts are the same: in_proj rows [z, x, B, C, dt]): `backbone.embeddings` -> `embed`,
`backbone.layers.i.{norm,mixer.*}` -> `layers.i.{norm,mixer.*}`, `backbone.norm_f` -> `norm_f`, `lm_head`.
The embedding has no padding_idx (Mamba2Model's nn.Embedding), so `pad_token_id` is only a token id here.
"""
from __future__ import annotations

import math

from ._common import common_model, head, num, only, refuse, under

MODEL_TYPE = "mamba2"
HF_CLASS = "Mamba2ForCausalLM"
IGNORED = {
    "pad_token_id": "a token id (Mamba2Model's embedding has no padding_idx)",
    "time_step_rank": "Mamba-2 has no dt projection of its own (dt is a slice of in_proj)",
    "time_step_min": "initialisation of dt_bias (the clamp is time_step_limit)",
    "time_step_max": "initialisation of dt_bias (the clamp is time_step_limit)",
    "time_step_floor": "initialisation of dt_bias",
    "residual_in_fp32": "the residual stream's precision under bf16/fp16 (the same math; identical in fp32)",
    "rescale_prenorm_residual": "initialisation of out_proj",
    "fused_add_norm": "older configs (mamba_ssm's): a kernel fusion of the same residual add and norm",
    "norm_before_gate": "older configs: transformers' Mamba2 never reads it (its gated norm is rmsnorm(y * silu(z)))",
}


def to_hyb(cfg) -> str:
    d = cfg.get("hidden_size", 4096)
    vocab = cfg.get("vocab_size", 32768)
    h, p = cfg.get("num_heads", 128), cfg.get("head_dim", 64)
    expand = cfg.get("expand", 2)
    if h * p != int(expand * d):
        cfg.fail("num_heads", f"num_heads x head_dim = {h * p} but expand x hidden_size = {int(expand * d)}: "
                              "Mamba2Mixer needs them equal")
    if h % cfg.get("n_groups", 8):
        cfg.fail("n_groups", f"{cfg.get('n_groups', 8)} groups do not divide num_heads = {h}")
    cfg.expect("rms_norm", (True,), True, why="older configs (mamba_ssm's): transformers' blocks use RMSNorm only")
    cfg.expect("hidden_act", ("silu", "swish"), "silu", why="Mamba2Mixer's conv activation: hybridc's mamba2 uses "
                                                             "silu only")
    lo, hi = cfg.get("time_step_limit", [0.0, math.inf])
    return (f"dim {d}\nvocab {vocab}\noutput logits\n"
            f"tie_embeddings {num(cfg.get('tie_word_embeddings', False))}\n"
            f"norm rms eps={num(cfg.get('layer_norm_epsilon', 1e-5))}\ndropout 0\nffn after=none\n"
            f"mamba2 heads={h} head_dim={p} inner={h * p} state={cfg.get('state_size', 128)} "
            f"groups={cfg.get('n_groups', 8)} conv={cfg.get('conv_kernel', 4)} chunk={cfg.get('chunk_size', 256)} "
            f"conv_bias={num(cfg.get('use_conv_bias', True))} proj_bias={num(cfg.get('use_bias', False))} "
            f"dt_min={num(lo)} dt_max={num(hi)}\n"
            f"layers mamba2 x{cfg.get('num_hidden_layers', 64)}\n")


def tensors(cfg, model, ours) -> list:
    maps = head(model, ours, embed="backbone.embeddings.weight", norm_f="backbone.norm_f.weight")
    for i in range(len(model.layers)):
        maps += under(ours, f"layers.{i}.", f"backbone.layers.{i}.")
    return maps


def plain(spec, family: str) -> None:
    """Refuse a Mamba-2 layer with options transformers' plain Mamba2Mixer has not (muP multipliers, norm order)."""
    if not spec.out_norm or spec.norm_before_gate:
        refuse("mamba2 out_norm/norm_before_gate", f"{family}'s Mamba-2 has the gated RMSNorm after the gate")
    for k in ("in_scale", "out_scale", "z_scale", "x_scale", "b_scale", "c_scale", "dt_scale"):
        if getattr(spec, k) != 1.0:
            refuse(f"mamba2 {k}", f"{family}'s Mamba-2 has no multipliers")


def to_config(model) -> dict:
    common_model(model, "Mamba2")
    only(model, {"mamba2"}, "Mamba2")
    if any(layer.ffn is not None for layer in model.layers):
        refuse("ffn", "Mamba2 blocks are a Mamba-2 mixer only (no FFN sub-block)")
    specs = {layer.mixers[0] for layer in model.layers}
    if len(specs) != 1:
        refuse("layer options", "Mamba2's layers share one set of options")
    s = specs.pop()
    plain(s, "Mamba2")
    if s.inner % model.dim:
        refuse(f"mamba2 inner={s.inner}", "Mamba2's inner width is an integer expand x hidden_size")
    if model.norm_eps is None:
        refuse("norm eps", "Mamba2 has one layer_norm_epsilon for every norm: write `norm rms eps=X`")
    if model.pad_token is not None:
        refuse(f"pad_token {model.pad_token}", "Mamba2's embedding has no padding row")
    return {"vocab_size": model.vocab, "hidden_size": model.dim, "num_hidden_layers": len(model.layers),
            "tie_word_embeddings": model.tie_embeddings, "layer_norm_epsilon": model.norm_eps,
            "num_heads": s.heads, "head_dim": s.head_dim, "expand": s.inner // model.dim, "state_size": s.state,
            "n_groups": s.groups, "conv_kernel": s.conv, "chunk_size": s.chunk, "use_conv_bias": s.conv_bias,
            "use_bias": s.proj_bias, "hidden_act": "silu",
            "time_step_limit": [s.dt_min, s.dt_max if s.dt_max is not None else math.inf]}
