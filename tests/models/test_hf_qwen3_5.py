"""Whole-model check: transformers' Qwen3_5ForCausalLM (the dense text model) == hybridc
`layers gated_delta_net attn` at a tiny size.

Qwen3.5 is Qwen3-Next's dense layout with the deltanet's projections unfused: the same options (value heads, gated
attention with partial RoPE 0.25, per-head q/k norms, zero-centred norms `(1 + w)` at eps 1e-6 except the deltanet's
plain gated output norm), the SwiGLU FFN after each layer.

Mapping: as Qwen3-Next's (hybridc/hf/families/qwen3_next.py) except the deltanet: `in_proj_qkv` rows are
`[q (H K), k (H K), v (Hv V)]` -> our `q_proj` / `k_proj` / `v_proj`, `in_proj_z` -> `g_proj`, `in_proj_b` ->
`b_proj`, `in_proj_a` -> `a_proj`; `conv1d` channels `[q, k, v]` -> our three convs; `norm` -> `o_norm`, `out_proj`
-> `o_proj`, `A_log`, `dt_bias` unchanged.
"""
import re

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")
q35 = pytest.importorskip("transformers.models.qwen3_5.modeling_qwen3_5")

from _hf_whole import check_whole, report, rules  # noqa: E402

D, V, HIDDEN, EPS = 64, 100, 96, 1e-6
H, HV, K, VD = 2, 4, 16, 16
L = r"model\.layers\.(\d+)\."


def split_qkv(src) -> dict:
    out = {}
    for name in list(src.keys()):
        m = re.fullmatch(L + r"linear_attn\.(in_proj_qkv|conv1d)\.weight", name)
        if m is not None:
            suffix = "_proj.weight" if m[2] == "in_proj_qkv" else "_conv1d.weight"
            for n, t in zip("qkv", src[name].split([H * K, H * K, HV * VD], dim=0)):
                out[f"layers.{m[1]}.mixer.{n}{suffix}"] = t
    return out


MAPPING = rules(
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.norm\.weight", "norm_f.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (L + r"input_layernorm\.weight", r"layers.\1.norm.weight"),
    (L + r"post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
    (L + r"mlp\.(gate|up|down)_proj\.weight", r"layers.\1.ffn.\2.weight"),
    (L + r"linear_attn\.in_proj_z\.weight", r"layers.\1.mixer.g_proj.weight"),
    (L + r"linear_attn\.in_proj_([ab])\.weight", r"layers.\1.mixer.\2_proj.weight"),
    (L + r"linear_attn\.norm\.weight", r"layers.\1.mixer.o_norm.weight"),
    (L + r"linear_attn\.out_proj\.weight", r"layers.\1.mixer.o_proj.weight"),
    (L + r"linear_attn\.(A_log|dt_bias)", r"layers.\1.mixer.\2"),
    (L + r"self_attn\.(.+)", r"layers.\1.mixer.\2"),
    extra=split_qkv,
)


def test_qwen3_5_for_causal_lm(tmp_path, monkeypatch):
    # with fla installed transformers would call its Triton kernel (no CPU driver): use the wrapped torch function
    monkeypatch.setattr(q35, "torch_chunk_gated_delta_rule", q35.torch_chunk_gated_delta_rule.__wrapped__)
    cfg = tf.Qwen3_5TextConfig(vocab_size=V, hidden_size=D, num_hidden_layers=2,
                               layer_types=["linear_attention", "full_attention"], num_attention_heads=4,
                               num_key_value_heads=2, head_dim=16, intermediate_size=HIDDEN, linear_num_key_heads=H,
                               linear_num_value_heads=HV, linear_key_head_dim=K, linear_value_head_dim=VD,
                               linear_conv_kernel_dim=4, rms_norm_eps=EPS,
                               rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                "partial_rotary_factor": 0.25},
                               attention_bias=False, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = q35.Qwen3_5ForCausalLM(cfg)
    program = (f"layers gated_delta_net attn; dim {D}; vocab {V}; output logits; "
               f"norm rms eps={EPS} zero_centered=true; dropout 0; "
               f"ffn after=all act=silu gated=true bias=false hidden={HIDDEN}; "
               f"gated_delta_net heads={H} v_heads={HV} head_dim={K} v_head_dim={VD} conv=4 gate=true; "
               f"attn heads=4 kv_heads=2 head_dim=16 rope=true rope_fraction=0.25 gate=true qk_norm=head window=none")
    report("qwen3_5", check_whole(hf, program, MAPPING, vocab=V))
