"""Whole-model check: transformers' JambaForCausalLM (dense: num_experts=1) == hybridc `layers mamba attn mamba`.

Layer kinds: Mamba-1 with weighted RMSNorms on dt, B, C (`inner_norm=weighted`, eps 1e-6 as Jamba's rms_norm_eps)
and attention (GQA, no positional encoding, no QK-norm), each followed by the SwiGLU FFN (`ffn after=all`).
Attention at Jamba's period 3, offset 1.
Mapping (names only, same layouts): `model.embed_tokens` -> `embed`; per layer `input_layernorm` -> `norm`,
`mamba.*` / `self_attn.*` -> `mixer.*` (the inner norms keep their names `{dt,b,c}_layernorm`), `pre_ff_layernorm`
-> `ffn_norm`, `feed_forward.{gate,up,down}_proj` -> `ffn.{gate,up,down}`; `model.final_layernorm` -> `norm_f`.
"""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, report, rules  # noqa: E402

D, V, N, HIDDEN, EPS = 64, 100, 16, 96, 1e-6

MAPPING = rules(
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.final_layernorm\.weight", "norm_f.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"layers.\1.norm.weight"),
    (r"model\.layers\.(\d+)\.pre_ff_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
    (r"model\.layers\.(\d+)\.feed_forward\.(gate|up|down)_proj\.weight", r"layers.\1.ffn.\2.weight"),
    (r"model\.layers\.(\d+)\.(?:mamba|self_attn)\.(.+)", r"layers.\1.mixer.\2"),
)


def test_jamba_for_causal_lm(tmp_path):
    cfg = tf.JambaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=3, attn_layer_period=3, attn_layer_offset=1,
                         num_experts=1, expert_layer_period=1, expert_layer_offset=0, mamba_d_state=N,
                         mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=4, mamba_conv_bias=True,
                         mamba_proj_bias=False, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=HIDDEN, rms_norm_eps=EPS, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = tf.JambaForCausalLM(cfg)
    program = (f"layers mamba attn mamba; dim {D}; vocab {V}; output logits; norm rms; dropout 0; "
               f"ffn after=all act=silu gated=true bias=false hidden={HIDDEN}; "
               f"mamba state={N} expand=2 conv=4 dt_rank=4 inner_norm=weighted eps={EPS}; "
               f"attn heads=4 kv_heads=2 head_dim=16 rope=false qk_norm=none window=none")
    report("jamba", check_whole(hf, program, MAPPING, vocab=V))
