"""GraniteMoeHybrid (Granite 4.0-H) through `import-hf`: Mamba-2 (2 groups) and attention layers (GQA, no positional
encoding, Granite's attention_multiplier), the top-2 MoE plus the shared MLP on every layer, Granite's embedding,
residual and logits multipliers, tied embeddings, a padding token (tests/hf/_harness.py); the dense form
(`num_local_experts=0`, the shared MLP alone) with RoPE on the structure; refused configs."""
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import hybridc  # noqa: E402
from hybridc.hf import export_family  # noqa: E402
from _harness import check_family, ids, perturb  # noqa: E402

D, V = 64, 100
ZOO = Path(__file__).resolve().parents[2] / "examples" / "zoo"
GRANITE = dict(embedding_multiplier=12.0, residual_multiplier=0.22, logits_scaling=0.5, attention_multiplier=0.015625)


def config(**kw):
    base = dict(vocab_size=V, hidden_size=D, num_hidden_layers=2, layer_types=["mamba", "attention"],
                num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                intermediate_size=32, shared_intermediate_size=96, mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2,
                mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=8, position_embedding_type="nope",
                rms_norm_eps=1e-5, tie_word_embeddings=True, pad_token_id=0, **GRANITE)
    return tf.GraniteMoeHybridConfig(**(base | kw))


def test_granite_moe_hybrid(tmp_path):
    cfg = config()
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = tf.GraniteMoeHybridForCausalLM(cfg)
    assert [(b.mamba is not None, b.self_attn is not None, b.block_sparse_moe is not None) for b in hf.model.layers] \
        == [(True, False, True), (False, True, True)]
    check_family(hf, tmp_path, vocab=V,
                 expect_in_text=("layers mamba2 attn\n", "pad_token 0", "tie_embeddings true", "embed_scale 12",
                                 "residual_scale 0.22", "logit_scale 2", "scale=0.015625", "shared_hidden=96",
                                 "groups=2"))


def test_granite_dense_rope(tmp_path):
    """No experts (the shared MLP alone), RoPE, attention biases, the older `layers_block_type` spelling: the
    structure (parameter count), export's config and the logits (torch only)."""
    data = config(num_local_experts=0, position_embedding_type="rope", attention_bias=True,
                  attention_multiplier=0.25).to_dict()
    data["layers_block_type"] = data.pop("layer_types")
    data["architectures"] = ["GraniteMoeHybridForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(data, indent=2))
    text = hybridc.import_hf(tmp_path / "config.json")
    assert "experts" not in text and "hidden=96" in text and "rope=true" in text and "scale=" not in text
    m = hybridc.load(text)
    hf = tf.GraniteMoeHybridForCausalLM(tf.GraniteMoeHybridConfig.from_dict(data))
    assert hf.model.layers[0].block_sparse_moe is None and hf.model.rotary_emb is not None
    assert hybridc.describe(m)["params"] == sum(p.numel() for p in hf.parameters())
    _, back = export_family(m)
    assert back["num_local_experts"] == 0 and back["position_embedding_type"] == "rope"

    perturb(hf)
    hf.save_pretrained(tmp_path / "ck")
    ours = hybridc.load_hf_weights(hybridc.build(m, backend="torch"), tmp_path / "ck").eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids(V)), hf.eval()(input_ids=ids(V)).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("field, value, words", [
    ("hidden_act", "gelu", "convolution"),
    ("position_embedding_type", "rope", "yarn"),
    ("layer_types", ["mamba", "sliding_attention"], "full_attention"),
    ("attention_dropout", 0.1, "dropout"),
])
def test_granite_refuses(tmp_path, field, value, words):
    data = config().to_dict() | {field: value, "architectures": ["GraniteMoeHybridForCausalLM"]}
    if field == "position_embedding_type":  # RoPE on, with a scaled type hybridc lacks
        data["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0}
        field = "rope_parameters"
    (tmp_path / "config.json").write_text(json.dumps(data, indent=2))
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.import_hf(tmp_path / "config.json")
    assert field in str(e.value) and words in str(e.value)


def test_granite_4_h_small_config(tmp_path):
    """Granite-4.0-H-Small's published config.json (older spellings: `mamba` / `attention` layer types, rope_theta at
    the top level, normalization_function) imports to the zoo file's model: 32,207,337,984 parameters (transformers'
    count, tests/zoo), the same active count."""
    attn = (5, 15, 25, 35)
    data = {"architectures": ["GraniteMoeHybridForCausalLM"], "model_type": "granitemoehybrid", "vocab_size": 100352,
            "hidden_size": 4096, "intermediate_size": 768, "shared_intermediate_size": 1536, "num_local_experts": 72,
            "num_experts_per_tok": 10, "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8,
            "layer_types": ["attention" if i in attn else "mamba" for i in range(40)], "mamba_n_heads": 128,
            "mamba_d_head": 64, "mamba_n_groups": 1, "mamba_d_state": 128, "mamba_d_conv": 4, "mamba_expand": 2,
            "mamba_chunk_size": 256, "mamba_conv_bias": True, "mamba_proj_bias": False, "attention_bias": False,
            "attention_dropout": 0.0, "position_embedding_type": "nope", "rope_theta": 10000, "rope_scaling": None,
            "embedding_multiplier": 12, "residual_multiplier": 0.22, "logits_scaling": 16,
            "attention_multiplier": 0.0078125, "rms_norm_eps": 1e-5, "normalization_function": "rmsnorm",
            "hidden_act": "silu", "tie_word_embeddings": True, "max_position_embeddings": 131072,
            "pad_token_id": 100256, "bos_token_id": 100257, "eos_token_id": 100257, "torch_dtype": "bfloat16",
            "initializer_range": 0.1, "use_cache": True, "output_router_logits": False, "router_aux_loss_coef": 0.0}
    (tmp_path / "config.json").write_text(json.dumps(data, indent=2))
    text = hybridc.import_hf(tmp_path / "config.json")
    assert "pad_token 100256" in text and "logit_scale 0.0625" in text and "scale=0.0078125" in text
    ours = hybridc.describe(hybridc.load(text))
    zoo = hybridc.describe(hybridc.load(open(ZOO / "granite_4.0_h_small.hyb").read()))
    assert ours["params"] == zoo["params"] == 32_207_337_984 and ours["active_params"] == zoo["active_params"]


def test_granite_export_refuses():
    """Export names the part GraniteMoeHybrid has no equivalent for (Qwen3-Next's gated shared expert)."""
    m = hybridc.load("dim 64; vocab 100; output logits; norm rms eps=1e-5; dropout 0; ffn after=all act=silu "
                     "gated=true hidden=32 experts=4 top_k=2 shared_experts=1 shared_gate=true; mamba2 state=16 "
                     "head_dim=16; attn heads=4 head_dim=16 window=none qk_norm=none; layers mamba2 attn")
    with pytest.raises(hybridc.HybridcError, match="granitemoehybrid: ffn experts: .*ungated shared MLP"):
        export_family(m, "granitemoehybrid")
