"""Whole-model check: transformers' Qwen3NextForCausalLM with its sparse MoE on every layer (4 experts, top-2,
norm_topk_prob, one shared expert with its sigmoid gate) == hybridc `layers gated_delta_net attn gated_delta_net attn`
with `ffn ... experts=4 top_k=2 router=softmax renorm=true shared_experts=1 shared_hidden=48 shared_gate=true`.

Layer kinds and norms as tests/models/test_hf_qwen3_next.py (Gated DeltaNet with value heads, gated attention with
partial RoPE 0.25 and per-head q/k norms, zero-centred norms at eps 1e-6).
Mapping: as Qwen3-Next's dense mapping (the deltanet's fused weights sliced by `linear_attn_to_ours`) with the MoE
renamed: `mlp.gate.weight` (E, D) -> `ffn.router.weight`, `mlp.experts.gate_up_proj` (E, 2F, D) ->
`ffn.experts.gate_up_proj`, `mlp.experts.down_proj` (E, D, F) -> `ffn.experts.down_proj`,
`mlp.shared_expert.{gate,up,down}_proj` -> `ffn.shared.{gate,up,down}`, `mlp.shared_expert_gate` (1, D) ->
`ffn.shared_gate`; a dense layer (mlp_only_layers) `mlp.{gate,up,down}_proj` -> `ffn.{gate,up,down}`.
The second case makes layer 2 dense (mlp_only_layers [2], intermediate_size 96) among MoE layers: hybridc's
per-layer override `at 3 ffn experts=0 ... hidden=96` (`at` counts from 1).
"""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")
qn = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")

from _hf_whole import check_whole, report, rules  # noqa: E402
from test_hf_qwen3_next import D, EPS, HV, H, K, V, VD, linear_attn_to_ours  # noqa: E402

E, TOP, F, SHARED = 4, 2, 32, 48
L = r"model\.layers\.(\d+)\."

MAPPING = rules(
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.norm\.weight", "norm_f.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (L + r"input_layernorm\.weight", r"layers.\1.norm.weight"),
    (L + r"post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
    (L + r"mlp\.gate\.weight", r"layers.\1.ffn.router.weight"),
    (L + r"mlp\.experts\.(gate_up_proj|down_proj)", r"layers.\1.ffn.experts.\2"),
    (L + r"mlp\.shared_expert\.(gate|up|down)_proj\.weight", r"layers.\1.ffn.shared.\2.weight"),
    (L + r"mlp\.shared_expert_gate\.weight", r"layers.\1.ffn.shared_gate.weight"),
    (L + r"mlp\.(gate|up|down)_proj\.weight", r"layers.\1.ffn.\2.weight"),
    (L + r"self_attn\.(.+)", r"layers.\1.mixer.\2"),
    extra=linear_attn_to_ours,
)


DENSE_LAYER_2 = "at 3 ffn experts=0 shared_experts=0 shared_hidden=none shared_gate=false hidden=96; "


@pytest.mark.parametrize("mlp_only", [[], [2]], ids=["all-moe", "dense-layer-2"])
def test_qwen3_next_moe_for_causal_lm(tmp_path, monkeypatch, mlp_only):
    # with fla installed transformers would call its Triton kernel (no CPU driver): use the wrapped torch function
    monkeypatch.setattr(qn, "torch_chunk_gated_delta_rule", qn.torch_chunk_gated_delta_rule.__wrapped__)
    cfg = tf.Qwen3NextConfig(vocab_size=V, hidden_size=D, num_hidden_layers=4,
                             layer_types=["linear_attention", "full_attention"] * 2, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, intermediate_size=96, linear_num_key_heads=H,
                             linear_num_value_heads=HV, linear_key_head_dim=K, linear_value_head_dim=VD,
                             linear_conv_kernel_dim=4, num_experts=E, num_experts_per_tok=TOP,
                             moe_intermediate_size=F, shared_expert_intermediate_size=SHARED, norm_topk_prob=True,
                             decoder_sparse_step=1, mlp_only_layers=mlp_only, rms_norm_eps=EPS,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "partial_rotary_factor": 0.25},
                             attention_bias=False, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = qn.Qwen3NextForCausalLM(cfg)
    assert [type(b.mlp).__name__ == "Qwen3NextSparseMoeBlock" for b in hf.model.layers] == \
        [i not in mlp_only for i in range(4)]
    program = (f"layers gated_delta_net attn gated_delta_net attn; dim {D}; vocab {V}; output logits; "
               f"norm rms eps={EPS} zero_centered=true; dropout 0; "
               f"ffn after=all act=silu gated=true bias=false hidden={F} experts={E} top_k={TOP} router=softmax "
               f"renorm=true shared_experts=1 shared_hidden={SHARED} shared_gate=true; "
               f"{DENSE_LAYER_2 if mlp_only else ''}"
               f"gated_delta_net heads={H} v_heads={HV} head_dim={K} v_head_dim={VD} conv=4 gate=true; "
               f"attn heads=4 kv_heads=2 head_dim=16 rope=true rope_fraction=0.25 gate=true qk_norm=head window=none")
    report(f"qwen3_next_moe mlp_only={mlp_only}", check_whole(hf, program, MAPPING, vocab=V, jax=True, tmp_path=tmp_path))
