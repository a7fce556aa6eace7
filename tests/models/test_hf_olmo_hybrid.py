"""Whole-model checks against transformers' OlmoHybridForCausalLM at a tiny size.

OLMo-hybrid mixes two block forms: its Gated DeltaNet layers are pre-norm (`x + f(norm(x))`, as `norm place=pre`)
and its attention layers post-norm, OLMo-2 style (`x + norm(f(x))`, as `norm place=post`). hybridc's `place` is
model-wide, so the published mixed layout cannot be written with the right norm placement: the mixed model is
checked for its parameter count only (two norms per block either way), and each block form is checked whole, logits
to 1e-5, in a model of that form alone: transformers' config validator wants both kinds, so its `layer_types` are
set after validation (all linear, or all full attention; `use_cache=False`), and OLMo-hybrid's own decoder layer
classes and model assembly run unchanged.

Layer kinds: Gated DeltaNet with separate q/k/v/a/b/g projections, beta in (0, 2) (`neg_eigval=true`, OLMo's
linear_allow_neg_eigval), output norm at eps 1e-5; attention with RMSNorm over the whole q and k projections
(`qk_norm=proj`) and full RoPE; the SwiGLU FFN after each.

Mapping: `model.embed_tokens` -> `embed`; per layer `mlp.{gate,up,down}_proj` -> `ffn.{gate,up,down}`,
`linear_attn.*` / `self_attn.*` -> `mixer.*` except `linear_attn.conv1d.weight` (one conv over [q (HK), k (HK),
v (HV)] channels) -> our `q_conv1d` / `k_conv1d` / `v_conv1d`, sliced; norms: the pre-norm block's
`input_layernorm` -> `norm`, `post_attention_layernorm` (before its FFN) -> `ffn_norm`; the post-norm block's
`post_attention_layernorm` -> `post_norm`, `post_feedforward_layernorm` -> `ffn_post_norm`; `model.norm` -> `norm_f`.
"""
import re

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")
oh = pytest.importorskip("transformers.models.olmo_hybrid.modeling_olmo_hybrid")

import hybridc  # noqa: E402
from _hf_whole import check_whole, hf_count, report, rules  # noqa: E402

D, V, HIDDEN, H, K, VD = 64, 100, 96, 2, 16, 32
L = r"model\.layers\.(\d+)\."
FFN = f"ffn after=all act=silu gated=true bias=false hidden={HIDDEN}"
GDN = f"gated_delta_net heads={H} head_dim={K} v_head_dim={VD} conv=4 neg_eigval=true"
ATTN = "attn heads=4 kv_heads=4 head_dim=16 rope=true qk_norm=proj window=none"


def conv_to_ours(src) -> dict:
    out = {}
    for name in list(src.keys()):
        m = re.fullmatch(L + r"linear_attn\.conv1d\.weight", name)
        if m is not None:
            for n, t in zip("qkv", src[name].split([H * K, H * K, H * VD], dim=0)):
                out[f"layers.{m[1]}.mixer.{n}_conv1d.weight"] = t
    return out


def mapping(place: str):
    norms = ((L + r"input_layernorm\.weight", r"layers.\1.norm.weight"),
             (L + r"post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight")) if place == "pre" else \
            ((L + r"post_attention_layernorm\.weight", r"layers.\1.post_norm.weight"),
             (L + r"post_feedforward_layernorm\.weight", r"layers.\1.ffn_post_norm.weight"))
    return rules(
        (r"model\.embed_tokens\.weight", "embed.weight"),
        (r"model\.norm\.weight", "norm_f.weight"),
        (r"lm_head\.weight", "lm_head.weight"),
        *norms,
        (L + r"mlp\.(gate|up|down)_proj\.weight", r"layers.\1.ffn.\2.weight"),
        (L + r"(?:linear_attn|self_attn)\.(.+)", r"layers.\1.mixer.\2"),
        extra=conv_to_ours,
    )


def olmo_hybrid(layer_types, eps):
    cfg = tf.OlmoHybridConfig(vocab_size=V, pad_token_id=0, hidden_size=D, num_hidden_layers=len(layer_types),
                              layer_types=["linear_attention"] * (len(layer_types) - 1) + ["full_attention"],
                              num_attention_heads=4, num_key_value_heads=4,
                              intermediate_size=HIDDEN, linear_num_key_heads=H, linear_num_value_heads=H,
                              linear_key_head_dim=K, linear_value_head_dim=VD, linear_conv_kernel_dim=4,
                              linear_allow_neg_eigval=True, rms_norm_eps=eps,
                              rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                              tie_word_embeddings=False, use_cache=False)
    cfg.layer_types = list(layer_types)  # after the validator (see the module docstring)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    return oh.OlmoHybridForCausalLM(cfg)


def test_pre_norm_gated_deltanet_blocks(tmp_path, monkeypatch):
    # with fla installed transformers would call its Triton kernel (no CPU driver): use the wrapped torch function
    monkeypatch.setattr(oh, "torch_chunk_gated_delta_rule", oh.torch_chunk_gated_delta_rule.__wrapped__)
    hf = olmo_hybrid(["linear_attention", "linear_attention"], eps=1e-5)  # 1e-5: OLMo's output norm's fixed eps
    program = (f"layers gated_delta_net x2; dim {D}; vocab {V}; output logits; norm rms eps=1e-5; dropout 0; "
               f"{FFN}; {GDN}")
    report("olmo_hybrid (linear layers)", check_whole(hf, program, mapping("pre"), vocab=V))


def test_post_norm_attention_blocks(tmp_path):
    hf = olmo_hybrid(["full_attention", "full_attention"], eps=1e-6)
    program = (f"layers attn x2; dim {D}; vocab {V}; output logits; norm rms eps=1e-6 place=post; dropout 0; "
               f"{FFN}; {ATTN}")
    report("olmo_hybrid (attention layers)", check_whole(hf, program, mapping("post"), vocab=V, jax=True,
                                                    tmp_path=tmp_path))


def test_mixed_layout_parameter_count():
    hf = olmo_hybrid(["linear_attention", "linear_attention", "linear_attention", "full_attention"], eps=1e-6)
    program = (f"layers gated_delta_net x3 attn; dim {D}; vocab {V}; output logits; norm rms eps=1e-6; dropout 0; "
               f"{FFN}; {GDN}; {ATTN}")
    assert hybridc.describe(hybridc.load(program))["params"] == hf_count(hf)
