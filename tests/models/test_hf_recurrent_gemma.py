"""Whole-model check: transformers' RecurrentGemmaForCausalLM (tied head) == hybridc
`layers griffin_lru griffin_lru attn` at a tiny size.

Layer kinds: Griffin's recurrent block (RG-LRU, 4 gate blocks, conv 4) and local attention (MQA, window 8 < the 11
tokens, partial RoPE 0.5, o_proj bias), each followed by the GeGLU MLP with biases (`act=gelu_tanh gated=true
bias=true`); zero-centred norms `(1 + w)` at eps 1e-6; the embedding times sqrt(dim) = 8 (`embed_scale 8`;
transformers keeps the factor in bf16, exact for 8); logits soft-capped at 30 (`logit_softcap 30`).

Mapping: `model.embed_tokens` -> `embed` (the tied head comes with it); per layer `temporal_pre_norm` -> `norm`,
`channel_pre_norm` -> `ffn_norm`, `mlp_block.{gate,up,down}_proj.*` -> `ffn.{gate,up,down}.*`,
`temporal_block.*` -> `mixer.*` with the RG-LRU renamed: `conv_1d.weight (W, 1, K)` -> `conv_1d.w (K, W)`
(transposed), `conv_1d.bias` -> `conv_1d.b`, `rg_lru.recurrent_param` -> `rg_lru.a_param`,
`rg_lru.input_gate_{weight,bias}` -> `rg_lru.input_gate.{w,b}`, `rg_lru.recurrent_gate_{weight,bias}` ->
`rg_lru.a_gate.{w,b}`; `model.final_norm` -> `norm_f`.
"""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, report, rules  # noqa: E402

D, V, HIDDEN, EPS, WINDOW = 64, 100, 96, 1e-6, 8
L = r"model\.layers\.(\d+)\."

MAPPING = rules(
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.final_norm\.weight", "norm_f.weight"),
    (L + r"temporal_pre_norm\.weight", r"layers.\1.norm.weight"),
    (L + r"channel_pre_norm\.weight", r"layers.\1.ffn_norm.weight"),
    (L + r"mlp_block\.(gate|up|down)_proj\.(weight|bias)", r"layers.\1.ffn.\2.\3"),
    (L + r"temporal_block\.conv_1d\.weight", r"layers.\1.mixer.conv_1d.w", lambda t, m: t[:, 0, :].t()),
    (L + r"temporal_block\.conv_1d\.bias", r"layers.\1.mixer.conv_1d.b"),
    (L + r"temporal_block\.rg_lru\.recurrent_param", r"layers.\1.mixer.rg_lru.a_param"),
    *[(L + rf"temporal_block\.rg_lru\.{theirs}_gate_{long}", rf"layers.\1.mixer.rg_lru.{ours}_gate.{short}")
      for theirs, ours in (("input", "input"), ("recurrent", "a")) for long, short in (("weight", "w"), ("bias", "b"))],
    (L + r"temporal_block\.(.+)", r"layers.\1.mixer.\2"),
)


def test_recurrent_gemma_for_causal_lm(tmp_path):
    cfg = tf.RecurrentGemmaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=1, intermediate_size=2 * HIDDEN, lru_width=D,
                                  attention_window_size=WINDOW, conv1d_width=4, logits_soft_cap=30.0,
                                  block_types=["recurrent", "recurrent", "attention"], rms_norm_eps=EPS,
                                  hidden_activation="gelu_pytorch_tanh", attention_bias=False,
                                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                   "partial_rotary_factor": 0.5},
                                  tie_word_embeddings=True)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = tf.RecurrentGemmaForCausalLM(cfg)
    assert hf.model.layers[0].mlp_block.gate_proj.out_features == HIDDEN  # transformers halves intermediate_size
    program = (f"layers griffin_lru griffin_lru attn; dim {D}; vocab {V}; output logits; tie_embeddings true; "
               f"norm rms eps={EPS} zero_centered=true; embed_scale 8; logit_softcap 30; dropout 0; "
               f"ffn after=all act=gelu_tanh gated=true bias=true hidden={HIDDEN}; griffin_lru heads=4 conv=4; "
               f"attn heads=4 kv_heads=1 head_dim=16 rope=true rope_fraction=0.5 o_bias=true qk_norm=none "
               f"window={WINDOW}")
    report("recurrent_gemma", check_whole(hf, program, MAPPING, vocab=V, jax=True, tmp_path=tmp_path))
