"""Whole-model check: transformers' Lfm3ForCausalLM (tied head) == hybridc
`layers short_conv attn short_conv attn` at a tiny size, for the part of LFM3 hybridc expresses.

Layer kinds: LFM's gated short convolution (width 7) and attention (GQA, per-head q/k RMSNorm), one global (RoPE
theta 1e6) and one sliding (window 4 < the 11 tokens, theta 1e4), set per layer with `at N attn ...`; every block
sandwiched, `x + post_norm(f(norm(x)))` (`norm place=both`, LFM3's use_sandwich_norm), the SwiGLU FFN alike.

Not expressible today, so configured off here (hybridc has no equivalent):
- `use_attention_gate`: LFM3 gates each head's output by one scalar, sigmoid(g_proj(x)) with g_proj (heads, dim);
  hybridc's `attn gate=true` is Qwen3-Next's per-channel gate drawn from q_proj;
- `rope_type: proportional` (LFM3's global layers, partial_rotary_factor 0.5): rotate-half pairs (i, i + head_dim/2)
  over the whole head with the frequencies of the first half only (base^(-2i/head_dim), the rest 0); hybridc's
  `rope_fraction` rotates the first head_dim * f channels as a head of that size (pairs (i, i + f head_dim / 2),
  base^(-2i/(f head_dim))): a different function. Both layer types use default RoPE here.

Mapping: `model.embed_tokens` -> `embed` (the tied head comes with it); per layer `operator_norm` -> `norm`,
`post_operator_norm` -> `post_norm`, `ffn_norm` -> `ffn_norm`, `post_ffn_norm` -> `ffn_post_norm`,
`conv.*` / `self_attn.*` -> `mixer.*`, `feed_forward.w1 / w3 / w2` -> `ffn.gate / up / down`;
`model.embedding_norm` (the final norm) -> `norm_f`.
"""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, report, rules  # noqa: E402

D, V, HIDDEN, EPS, WINDOW = 64, 100, 96, 1e-5, 4
L = r"model\.layers\.(\d+)\."
NORMS = {"operator_norm": "norm", "post_operator_norm": "post_norm", "ffn_norm": "ffn_norm",
         "post_ffn_norm": "ffn_post_norm"}
FFN = {"w1": "gate", "w3": "up", "w2": "down"}

MAPPING = rules(
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.embedding_norm\.weight", "norm_f.weight"),
    *[(L + rf"{a}\.weight", rf"layers.\1.{b}.weight") for a, b in NORMS.items()],
    *[(L + rf"feed_forward\.{a}\.weight", rf"layers.\1.ffn.{b}.weight") for a, b in FFN.items()],
    (L + r"(?:conv|self_attn)\.(.+)", r"layers.\1.mixer.\2"),
)


def test_lfm3_for_causal_lm(tmp_path):
    cfg = tf.Lfm3Config(vocab_size=V, pad_token_id=0, hidden_size=D, num_hidden_layers=4,
                        layer_types=["conv", "full_attention", "conv", "sliding_attention"], num_attention_heads=4,
                        num_key_value_heads=2, head_dim=16, intermediate_size=HIDDEN, conv_L_cache=7,
                        conv_bias=False, sliding_window=WINDOW, norm_eps=EPS, use_sandwich_norm=True,
                        use_attention_gate=False, attention_bias=False, tie_word_embeddings=True,
                        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = tf.Lfm3ForCausalLM(cfg)
    program = (f"layers short_conv attn short_conv attn; dim {D}; vocab {V}; output logits; tie_embeddings true; "
               f"norm rms eps={EPS} place=both; dropout 0; ffn after=all act=silu gated=true bias=false "
               f"hidden={HIDDEN}; short_conv conv=7 bias=false; attn heads=4 kv_heads=2 head_dim=16 rope=true "
               f"qk_norm=head; at 2 attn rope_base=1000000 window=none; at 4 attn rope_base=10000 window={WINDOW}")
    report("lfm3", check_whole(hf, program, MAPPING, vocab=V, jax=True, tmp_path=tmp_path))
