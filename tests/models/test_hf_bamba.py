"""Whole-model check: transformers' BambaForCausalLM == hybridc `layers mamba2 attn mamba2` at a tiny size.

Layer kinds: Mamba-2 and attention (GQA, partial RoPE: half of each head rotated, theta 1e4), each followed by the
SwiGLU FFN (`ffn after=all act=silu gated=true bias=false`).
Mapping (names only, same layouts): `model.embed_tokens` -> `embed`; per layer `input_layernorm` -> `norm`,
`mamba.*` / `self_attn.*` -> `mixer.*`, `pre_ff_layernorm` -> `ffn_norm`, `feed_forward.{gate,up,down}_proj` ->
`ffn.{gate,up,down}`; `model.final_layernorm` -> `norm_f`.
"""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, report, rules  # noqa: E402

D, V, N, P, HIDDEN = 64, 100, 16, 16, 96
EPS = 1e-5  # every norm (blocks, final, the mixer's gated norm): `norm rms eps=1e-5`

MAPPING = rules(
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.final_layernorm\.weight", "norm_f.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"layers.\1.norm.weight"),
    (r"model\.layers\.(\d+)\.pre_ff_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
    (r"model\.layers\.(\d+)\.feed_forward\.(gate|up|down)_proj\.weight", r"layers.\1.ffn.\2.weight"),
    (r"model\.layers\.(\d+)\.(?:mamba|self_attn)\.(.+)", r"layers.\1.mixer.\2"),
)


def test_bamba_for_causal_lm(tmp_path):
    cfg = tf.BambaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=3, attn_layer_indices=[1], mamba_d_state=N,
                         mamba_n_heads=2 * D // P, mamba_d_head=P, mamba_n_groups=1, mamba_d_conv=4,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=HIDDEN, rms_norm_eps=EPS,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
                         tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = tf.BambaForCausalLM(cfg)
    assert hf.model.layers[1].self_attn.head_dim == 16
    program = (f"layers mamba2 attn mamba2; dim {D}; vocab {V}; output logits; norm rms eps={EPS}; dropout 0; "
               f"ffn after=all act=silu gated=true bias=false hidden={HIDDEN}; "
               f"mamba2 state={N} expand=2 conv=4 head_dim={P}; "
               f"attn heads=4 kv_heads=2 head_dim=16 rope=true rope_fraction=0.5 qk_norm=none window=none")
    report("bamba", check_whole(hf, program, MAPPING, vocab=V, jax=True, tmp_path=tmp_path))
