"""LFM2 through `import-hf`: gated short convolutions and attention (GQA, QK-norm per head, RoPE theta 1e6),
SwiGLU FFNs at the width transformers' block_auto_adjust_ff_dim rounds to, a tied head, a padding token
(tests/hf/_harness.py); and the config values hybridc refuses, by name."""
import json

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import hybridc  # noqa: E402
from _harness import check_family, written_config  # noqa: E402

D, V = 64, 100


def config(**kw):
    base = dict(vocab_size=V, hidden_size=D, num_hidden_layers=3, layer_types=["conv", "full_attention", "conv"],
                num_attention_heads=4, num_key_value_heads=2, intermediate_size=144, block_auto_adjust_ff_dim=True,
                block_multiple_of=32, block_ffn_dim_multiplier=1.0, conv_L_cache=3, conv_bias=True, norm_eps=1e-5,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6}, tie_word_embeddings=True,
                pad_token_id=1)
    return tf.Lfm2Config(**(base | kw))


def test_lfm2(tmp_path):
    torch.manual_seed(0)
    hf = tf.Lfm2ForCausalLM(config())
    assert [type(l.conv if hasattr(l, "conv") else l.self_attn).__name__ for l in hf.model.layers] == \
        ["Lfm2ShortConv", "Lfm2Attention", "Lfm2ShortConv"]
    assert hf.model.layers[0].feed_forward.w1.out_features == 96  # int(2 * 144 / 3) rounded up to 32
    check_family(hf, tmp_path, vocab=V, expect_in_text=("layers short_conv attn short_conv", "pad_token 1",
                                                        "hidden=96", "tie_embeddings true", "bias=true"))


def _written(tmp_path, **changes):
    return written_config(tmp_path, config(), **changes)


@pytest.mark.parametrize("field, value, words", [
    ("layer_types", ["conv", "sliding_attention", "conv"], "full_attention"),
    ("rope_parameters", {"rope_type": "yarn", "rope_theta": 1e6, "factor": 2.0}, "yarn"),
    ("block_use_swiglu", False, "SwiGLU"),
    ("conv_dim", 32, "disagrees"),
    ("sliding_window", 8, "does not know this field"),
], ids=["layer-type", "rope-type", "no-swiglu", "conv-dim", "unknown-field"])
def test_lfm2_refuses(tmp_path, field, value, words):
    path = _written(tmp_path, **{field: value})
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.import_hf(path)
    msg = str(e.value)
    assert f"field '{field}'" in msg and words in msg and "config.json:" in msg, msg


def test_lfm2_original_spelling(tmp_path):
    """LiquidAI/LFM2's config.json spelling (`block_ff_dim`, `tie_embedding`, top-level `rope_theta`,
    `full_attn_idxs` without `layer_types`, size copies `block_dim` / `conv_dim` / `num_heads`), scaled down, reads
    as transformers reads it (the program of its re-saved config)."""
    src = {"architectures": ["Lfm2ForCausalLM"], "block_auto_adjust_ff_dim": True, "block_dim": D,
           "block_ff_dim": 144, "block_ffn_dim_multiplier": 1.0, "block_mlp_init_scale": 1.0, "block_multiple_of": 32,
           "block_norm_eps": 1e-05, "block_out_init_scale": 1.0, "block_use_swiglu": True,
           "block_use_xavier_init": True, "bos_token_id": 1, "conv_L_cache": 3, "conv_bias": False, "conv_dim": D,
           "conv_dim_out": D, "conv_use_xavier_init": True, "eos_token_id": 7, "full_attn_idxs": [1, 3],
           "hidden_size": D, "initializer_range": 0.02, "max_position_embeddings": 128000, "model_type": "lfm2",
           "norm_eps": 1e-05, "num_attention_heads": 4, "num_heads": 4, "num_hidden_layers": 4,
           "num_key_value_heads": 2, "pad_token_id": 0, "rope_theta": 1000000.0, "tie_embedding": False,
           "use_cache": True, "use_pos_enc": True, "vocab_size": V}
    (tmp_path / "orig").mkdir()
    (tmp_path / "orig" / "config.json").write_text(json.dumps(src))
    tf.AutoConfig.from_pretrained(tmp_path / "orig").save_pretrained(tmp_path / "resaved")
    text = hybridc.import_hf(tmp_path / "orig")
    assert text == hybridc.import_hf(tmp_path / "resaved")
    assert "layers (short_conv attn) x2" in text and "hidden=96" in text and "tie_embeddings" not in text, text
