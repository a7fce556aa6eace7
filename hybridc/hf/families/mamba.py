"""Mamba (Gu & Dao, transformers' `MambaForCausalLM`): a stack of pre-norm Mamba-1 blocks, RMSNorm at
`layer_norm_epsilon`, the head tied to the embedding by default. FalconMamba (`falcon_mamba.py`) is the same with
weightless RMSNorms on dt, B and C; both are written here once (`program`, `tensors`, `config`).

.hyb: `layers mamba xN`, `mamba state= expand= conv= dt_rank= proj_bias=<use_bias> conv_bias=<use_conv_bias>`
(FalconMamba adds `inner_norm=plain eps=<mixer_rms_eps>`), `norm rms eps=<layer_norm_epsilon>`.
Tensors: names only (the layouts are the same): `backbone.embeddings` -> `embed` (the tied head comes with it),
`backbone.layers.i.{norm,mixer.*}` -> `layers.i.{norm,mixer.*}`, `backbone.norm_f` -> `norm_f`, `lm_head` when untied.
The embedding has no padding_idx (MambaModel's nn.Embedding), so `pad_token_id` is only a token id here.
"""
from __future__ import annotations

import math

from ._common import common_model, head, num, only, refuse, under

MODEL_TYPE = "mamba"
HF_CLASS = "MambaForCausalLM"
IGNORED = {
    "pad_token_id": "a token id (MambaModel's embedding has no padding_idx)",
    "intermediate_size": "derived: transformers sets it to expand x hidden_size",
    "residual_in_fp32": "the residual stream's precision under bf16/fp16 (the same math; identical in fp32)",
    "time_step_scale": "initialisation of dt_proj (the checkpoint's weights are loaded)",
    "time_step_min": "initialisation of dt_proj's bias",
    "time_step_max": "initialisation of dt_proj's bias",
    "time_step_init_scheme": "initialisation of dt_proj",
    "time_step_floor": "initialisation of dt_proj's bias",
    "rescale_prenorm_residual": "initialisation of out_proj",
    "use_mambapy": "an implementation choice of the same scan",
    "use_associative_scan": "an implementation choice of the same scan",
    "fused_add_norm": "older configs (mamba_ssm's): a kernel fusion of the same residual add and norm",
}


def program(cfg, mixer_extra: str = "") -> str:
    """The `.hyb` text of a Mamba-family config (`mixer_extra`: FalconMamba's inner norms)."""
    d = cfg.get("hidden_size", 768)
    vocab = cfg.get("vocab_size", 50280)
    n = cfg.get("num_hidden_layers", 32)
    cfg.expect("hidden_act", ("silu", "swish"), "silu", why="MambaMixer's conv and gate activation: hybridc's mamba "
                                                             "uses silu only")
    cfg.expect("rms_norm", (True,), True, why="older configs (mamba_ssm's): transformers' blocks use RMSNorm only")
    expand = cfg.get("expand", 2)
    if isinstance(expand, bool) or not isinstance(expand, (int, float)) or expand <= 0:
        cfg.fail("expand", "must be a positive number")
    width = int(expand * d)
    size = f"expand={int(expand)}" if float(expand).is_integer() else f"inner={width}"
    rank = cfg.get("time_step_rank", "auto")
    rank = math.ceil(d / 16) if rank == "auto" else rank
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        cfg.fail("time_step_rank", 'a positive integer or "auto" (ceil(hidden_size / 16))')
    return (f"dim {d}\nvocab {vocab}\noutput logits\n"
            f"tie_embeddings {num(cfg.get('tie_word_embeddings', True))}\n"
            f"norm rms eps={num(cfg.get('layer_norm_epsilon', 1e-5))}\ndropout 0\nffn after=none\n"
            f"mamba state={cfg.get('state_size', 16)} {size} conv={cfg.get('conv_kernel', 4)} dt_rank={rank} "
            f"proj_bias={num(cfg.get('use_bias', False))} conv_bias={num(cfg.get('use_conv_bias', True))}"
            f"{mixer_extra}\n"
            f"layers mamba x{n}\n")


def to_hyb(cfg) -> str:
    return program(cfg)


def tensors(cfg, model, ours) -> list:
    maps = head(model, ours, embed="backbone.embeddings.weight", norm_f="backbone.norm_f.weight")
    for i in range(len(model.layers)):
        maps += under(ours, f"layers.{i}.", f"backbone.layers.{i}.")
    return maps


def config(model, family: str, inner_norm: str) -> dict:
    """config.json of a model of `layers mamba xN` (the family's inner norms `inner_norm`), or NotExpressible."""
    common_model(model, family)
    only(model, {"mamba"}, family)
    if any(layer.ffn is not None for layer in model.layers):
        refuse("ffn", f"{family} blocks are a Mamba mixer only (no FFN sub-block)")
    specs = {layer.mixers[0] for layer in model.layers}
    if len(specs) != 1:
        refuse("layer options", f"{family}'s Mamba layers share one set of options")
    s = specs.pop()
    if s.heads != 1:
        refuse(f"mamba heads={s.heads}", f"{family}'s mixer has one x_proj and dt_proj (heads=1)")
    if s.inner_norm != inner_norm:
        want = "no inner norms" if inner_norm == "none" else f"inner_norm={inner_norm}"
        refuse(f"mamba inner_norm={s.inner_norm}", f"{family}'s mixer has {want}")
    width = s.width(model.dim)
    if s.inner is not None:
        fix = f": write expand={width // model.dim}" if width % model.dim == 0 else ""
        refuse(f"mamba inner={s.inner}", f"{family}'s inner width is an integer expand x hidden_size{fix}")
    if model.norm_eps is None:
        refuse("norm eps", f"{family} has one layer_norm_epsilon: write `norm rms eps=X`")
    if model.pad_token is not None:
        refuse(f"pad_token {model.pad_token}", f"{family}'s embedding has no padding row")
    return {"vocab_size": model.vocab, "hidden_size": model.dim, "num_hidden_layers": len(model.layers),
            "tie_word_embeddings": model.tie_embeddings, "layer_norm_epsilon": model.norm_eps,
            "state_size": s.state, "expand": width // model.dim, "conv_kernel": s.conv, "time_step_rank": s.dt_rank,
            "use_bias": s.proj_bias, "use_conv_bias": s.conv_bias, "hidden_act": "silu"}


def to_config(model) -> dict:
    return config(model, "Mamba", "none")


__all__ = ["MODEL_TYPE", "HF_CLASS", "IGNORED", "to_hyb", "tensors", "to_config", "program", "config"]
