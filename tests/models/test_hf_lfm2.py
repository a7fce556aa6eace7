"""Whole-model check: transformers' Lfm2ForCausalLM (tied head) == hybridc `layers short_conv attn short_conv`.

Layer kinds: LFM2's gated short convolution (`short_conv conv=3`) and attention (GQA, full RoPE theta 1e6, RMSNorm
per head on q and k: `qk_norm=head`), each followed by the SwiGLU FFN; every norm at eps 1e-5 (`norm rms eps=1e-5`).
Mapping (names only, same layouts): `model.embed_tokens` -> `embed` (the tied head comes with it); per layer
`operator_norm` -> `norm`, `conv.*` -> `mixer.*`, `self_attn.{q,k,v}_proj` -> `mixer.{q,k,v}_proj`,
`self_attn.out_proj` -> `mixer.o_proj`, `self_attn.{q,k}_layernorm` -> `mixer.{q,k}_norm`, `ffn_norm` -> `ffn_norm`,
`feed_forward.w1 / w3 / w2` -> `ffn.gate / up / down`; `model.embedding_norm` (LFM2's final norm) -> `norm_f`.
"""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, report, rules  # noqa: E402

D, V, HIDDEN, EPS = 64, 100, 96, 1e-5
FFN = {"w1": "gate", "w3": "up", "w2": "down"}

MAPPING = rules(
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.embedding_norm\.weight", "norm_f.weight"),
    (r"model\.layers\.(\d+)\.operator_norm\.weight", r"layers.\1.norm.weight"),
    (r"model\.layers\.(\d+)\.ffn_norm\.weight", r"layers.\1.ffn_norm.weight"),
    *[(rf"model\.layers\.(\d+)\.feed_forward\.{a}\.weight", rf"layers.\1.ffn.{b}.weight") for a, b in FFN.items()],
    (r"model\.layers\.(\d+)\.conv\.(.+)", r"layers.\1.mixer.\2"),
    (r"model\.layers\.(\d+)\.self_attn\.out_proj\.weight", r"layers.\1.mixer.o_proj.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.([qk])_layernorm\.weight", r"layers.\1.mixer.\2_norm.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.([qkv]_proj\.weight)", r"layers.\1.mixer.\2"),
)


def test_lfm2_for_causal_lm(tmp_path):
    cfg = tf.Lfm2Config(vocab_size=V, hidden_size=D, num_hidden_layers=3,
                        layer_types=["conv", "full_attention", "conv"], num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=HIDDEN, block_auto_adjust_ff_dim=False, conv_L_cache=3, conv_bias=False,
                        norm_eps=EPS, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                        tie_word_embeddings=True)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = tf.Lfm2ForCausalLM(cfg)
    program = (f"layers short_conv attn short_conv; dim {D}; vocab {V}; output logits; tie_embeddings true; "
               f"norm rms eps={EPS}; dropout 0; ffn after=all act=silu gated=true bias=false hidden={HIDDEN}; "
               f"short_conv conv=3 bias=false; "
               f"attn heads=4 kv_heads=2 head_dim=16 rope=true rope_base=1000000 qk_norm=head window=none")
    report("lfm2", check_whole(hf, program, MAPPING, vocab=V, jax=True, tmp_path=tmp_path))
