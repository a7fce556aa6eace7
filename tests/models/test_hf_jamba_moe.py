"""Whole-model check: transformers' JambaForCausalLM with its sparse MoE (4 experts, top-2, MoE every other layer:
expert_layer_period 2, expert_layer_offset 1) == hybridc `layers mamba attn mamba mamba` + `moe every=2 offset=1`.

Layer kinds as tests/models/test_hf_jamba.py (Mamba-1 with weighted dt/B/C RMSNorms, GQA attention without positional
encoding), each followed by the SwiGLU FFN; the FFNs of layers 1 and 3 (the attention layer and a mamba layer) are
JambaSparseMoeBlock: softmax over the 4 router logits, the top-2 probabilities used unrenormalised (`router=softmax
renorm=false`).
Mapping (names only, same layouts): `model.embed_tokens` -> `embed`; per layer `input_layernorm` -> `norm`,
`mamba.*` / `self_attn.*` -> `mixer.*`, `pre_ff_layernorm` -> `ffn_norm`; dense layers `feed_forward.{gate,up,down}_proj`
-> `ffn.{gate,up,down}`; MoE layers `feed_forward.router.weight` (E, D) -> `ffn.router.weight`,
`feed_forward.experts.gate_up_proj` (E, 2F, D) -> `ffn.experts.gate_up_proj`, `feed_forward.experts.down_proj`
(E, D, F) -> `ffn.experts.down_proj`; `model.final_layernorm` -> `norm_f`.
"""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, report, rules  # noqa: E402

D, V, N, HIDDEN, EPS, E, K = 64, 100, 16, 96, 1e-6, 4, 2
L = r"model\.layers\.(\d+)\."

MAPPING = rules(
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.final_layernorm\.weight", "norm_f.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (L + r"input_layernorm\.weight", r"layers.\1.norm.weight"),
    (L + r"pre_ff_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
    (L + r"feed_forward\.(gate|up|down)_proj\.weight", r"layers.\1.ffn.\2.weight"),
    (L + r"feed_forward\.router\.weight", r"layers.\1.ffn.router.weight"),
    (L + r"feed_forward\.experts\.(gate_up_proj|down_proj)", r"layers.\1.ffn.experts.\2"),
    (L + r"(?:mamba|self_attn)\.(.+)", r"layers.\1.mixer.\2"),
)


def test_jamba_moe_for_causal_lm(tmp_path):
    cfg = tf.JambaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=4, attn_layer_period=4, attn_layer_offset=1,
                         num_experts=E, num_experts_per_tok=K, expert_layer_period=2, expert_layer_offset=1,
                         mamba_d_state=N, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=4, mamba_conv_bias=True,
                         mamba_proj_bias=False, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=HIDDEN, rms_norm_eps=EPS, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = tf.JambaForCausalLM(cfg)
    assert [type(b.feed_forward).__name__ for b in hf.model.layers] == \
        ["JambaMLP", "JambaSparseMoeBlock", "JambaMLP", "JambaSparseMoeBlock"]
    program = (f"layers mamba attn mamba mamba; dim {D}; vocab {V}; output logits; norm rms eps={EPS}; dropout 0; "
               f"ffn after=all act=silu gated=true bias=false hidden={HIDDEN}; "
               f"moe every=2 offset=1 experts={E} top_k={K} router=softmax renorm=false; "
               f"mamba state={N} expand=2 conv=4 dt_rank=4 inner_norm=weighted eps={EPS}; "
               f"attn heads=4 kv_heads=2 head_dim=16 rope=false qk_norm=none window=none")
    report("jamba_moe", check_whole(hf, program, MAPPING, vocab=V, jax=True, tmp_path=tmp_path))
