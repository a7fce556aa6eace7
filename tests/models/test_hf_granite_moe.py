"""Whole-model check: transformers' GraniteMoeHybridForCausalLM with experts (4 experts, top-2) and the shared MLP
on every layer == hybridc `layers mamba2 attn mamba2 attn` with `ffn ... experts=4 top_k=2 router=softmax renorm=true
shared_experts=1 shared_hidden=96`, and Granite-4.0-H's multipliers (embed_scale, residual_scale, logit_scale,
attn scale), tied embeddings, no positional encoding.

Granite's router takes the top-2 of the logits, then a softmax over those two: the renormalised softmax
(`router=softmax renorm=true`). The block adds the MoE output and the shared MLP's: `experts + shared`.
Mapping: `model.embed_tokens` -> `embed`; per layer `input_layernorm` -> `norm`, `mamba.*` / `self_attn.*` ->
`mixer.*`, `post_attention_layernorm` -> `ffn_norm`; `block_sparse_moe.router.weight` (E, D) -> `ffn.router.weight`,
`block_sparse_moe.experts.gate_up_proj` (E, 2F, D) -> `ffn.experts.gate_up_proj`, `block_sparse_moe.experts.down_proj`
(E, D, F) -> `ffn.experts.down_proj`; `shared_mlp.input_linear` (2S, D) split in half -> `ffn.shared.gate` (first S
rows) and `ffn.shared.up`, `shared_mlp.output_linear` -> `ffn.shared.down`; `model.norm` -> `norm_f`.
"""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, report, rules  # noqa: E402

D, V, N, P, EPS = 64, 100, 16, 16, 1e-5
E, K, F, SHARED = 4, 2, 32, 96
GRANITE = dict(embedding_multiplier=12.0, residual_multiplier=0.22, logits_scaling=8.0, attention_multiplier=0.015625)


def _split_input_linear(src):
    """Granite's fused shared [gate; up] (2S, D) -> our ffn.shared.gate, ffn.shared.up (S, D) each."""
    out = {}
    for name, w in src.take(r"model\.layers\.(\d+)\.shared_mlp\.input_linear\.weight").items():
        i = name.split(".")[2]
        out[f"layers.{i}.ffn.shared.gate.weight"], out[f"layers.{i}.ffn.shared.up.weight"] = w.chunk(2, dim=0)
    return out


L = r"model\.layers\.(\d+)\."
MAPPING = rules(
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.norm\.weight", "norm_f.weight"),
    (L + r"input_layernorm\.weight", r"layers.\1.norm.weight"),
    (L + r"post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
    (L + r"block_sparse_moe\.router\.weight", r"layers.\1.ffn.router.weight"),
    (L + r"block_sparse_moe\.experts\.(gate_up_proj|down_proj)", r"layers.\1.ffn.experts.\2"),
    (L + r"shared_mlp\.output_linear\.weight", r"layers.\1.ffn.shared.down.weight"),
    (L + r"(?:mamba|self_attn)\.(.+)", r"layers.\1.mixer.\2"),
    extra=_split_input_linear,
)


def test_granite_4_h_moe(tmp_path):
    cfg = tf.GraniteMoeHybridConfig(
        vocab_size=V, hidden_size=D, num_hidden_layers=4,
        layer_types=["mamba", "attention", "mamba", "attention"],
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=E, num_experts_per_tok=K,
        intermediate_size=F, shared_intermediate_size=SHARED,
        mamba_n_heads=2 * D // P, mamba_d_head=P, mamba_n_groups=2, mamba_d_state=N, mamba_d_conv=4, mamba_expand=2,
        position_embedding_type="nope", rms_norm_eps=EPS, tie_word_embeddings=True, **GRANITE)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = tf.GraniteMoeHybridForCausalLM(cfg)
    assert all(b.block_sparse_moe is not None for b in hf.model.layers) and hf.model.layers[1].self_attn is not None
    program = (f"layers mamba2 attn mamba2 attn; dim {D}; vocab {V}; output logits; tie_embeddings true; "
               f"norm rms eps={EPS}; dropout 0; embed_scale 12; residual_scale 0.22; logit_scale 0.125; "
               f"ffn after=all act=silu gated=true bias=false hidden={F} experts={E} top_k={K} router=softmax "
               f"renorm=true shared_experts=1 shared_hidden={SHARED}; "
               f"mamba2 state={N} expand=2 conv=4 head_dim={P} groups=2; "
               f"attn heads=4 kv_heads=2 head_dim=16 rope=false qk_norm=false window=none scale=0.015625")
    report("granite_4_h_moe", check_whole(hf, program, MAPPING, vocab=V, jax=True, tmp_path=tmp_path))
