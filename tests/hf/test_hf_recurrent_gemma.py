"""RecurrentGemma through `import-hf`: Griffin recurrent blocks (RG-LRU, conv 4, an lru_width other than dim) and
local attention (MQA, window 8 < the 11 tokens, partial RoPE 0.5, q/k/v biases), GeGLU MLPs with biases,
zero-centred norms, the bf16 embedding normalizer, the logit soft-cap, a tied head, a padding token
(tests/hf/_harness.py); and the config values hybridc refuses, by name."""
import json

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import hybridc  # noqa: E402
from _harness import check_family, written_config  # noqa: E402

D, V = 64, 100


def config(**kw):
    base = dict(vocab_size=V, hidden_size=D, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                intermediate_size=192, lru_width=96, attention_window_size=8, conv1d_width=4, logits_soft_cap=30.0,
                block_types=["recurrent", "attention"], rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
                attention_bias=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                      "partial_rotary_factor": 0.5},
                tie_word_embeddings=True, pad_token_id=3)
    return tf.RecurrentGemmaConfig(**(base | kw))


def test_recurrent_gemma(tmp_path):
    torch.manual_seed(0)
    hf = tf.RecurrentGemmaForCausalLM(config())
    assert [type(l.temporal_block).__name__ for l in hf.model.layers] == \
        ["RecurrentGemmaRecurrentBlock", "RecurrentGemmaAttention", "RecurrentGemmaRecurrentBlock"]
    assert hf.model.layers[0].mlp_block.gate_proj.out_features == 96  # transformers halves intermediate_size
    assert float(hf.model.normalizer) == 8.0
    check_family(hf, tmp_path, vocab=V, expect_in_text=(
        "layers griffin_lru attn griffin_lru", "embed_scale 8", "logit_softcap 30", "zero_centered=true",
        "pad_token 3", "width=96"))


def _written(tmp_path, **changes):
    return written_config(tmp_path, config(), **changes)


@pytest.mark.parametrize("field, value, words", [
    ("block_types", ["recurrent", "mlp"], "cycle"),
    ("hidden_activation", "relu", "gelu_pytorch_tanh"),
    ("logits_soft_cap", None, "soft-caps"),
    ("attention_dropout", 0.1, "dropout"),
    ("rope_parameters", {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}, "linear"),
], ids=["block-type", "activation", "no-softcap", "dropout", "rope-type"])
def test_recurrent_gemma_refuses(tmp_path, field, value, words):
    path = _written(tmp_path, **{field: value})
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.import_hf(path)
    msg = str(e.value)
    assert f"field '{field}'" in msg and words in msg and "config.json:" in msg, msg


def test_recurrent_gemma_original_spelling(tmp_path):
    """google/recurrentgemma-2b's config.json spelling (`_block_types`, `embeddings_scale_by_sqrt_dim`, top-level
    `rope_theta` and `partial_rotary_factor`), scaled down, reads as transformers reads it (the program of its
    re-saved config); `_block_types` other than the block_types transformers runs is refused."""
    src = {"_block_types": ["recurrent", "recurrent", "attention"], "architectures": ["RecurrentGemmaForCausalLM"],
           "attention_bias": False, "attention_dropout": 0.0, "attention_window_size": 8, "conv1d_width": 4,
           "embeddings_scale_by_sqrt_dim": True, "head_dim": 16, "hidden_activation": "gelu_pytorch_tanh",
           "hidden_size": D, "intermediate_size": 192, "logits_soft_cap": 30.0, "lru_width": D,
           "model_type": "recurrent_gemma", "num_attention_heads": 4, "num_hidden_layers": 4,
           "num_key_value_heads": 1, "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
           "vocab_size": V}
    (tmp_path / "orig").mkdir()
    (tmp_path / "orig" / "config.json").write_text(json.dumps(src))
    tf.AutoConfig.from_pretrained(tmp_path / "orig").save_pretrained(tmp_path / "resaved")
    text = hybridc.import_hf(tmp_path / "orig")
    assert text == hybridc.import_hf(tmp_path / "resaved")
    assert "layers griffin_lru x2 attn griffin_lru" in text and "rope_fraction=0.5" in text, text
    (tmp_path / "orig" / "config.json").write_text(json.dumps(src | {"_block_types": ["recurrent", "attention"]}))
    with pytest.raises(hybridc.HybridcError, match="field '_block_types'"):
        hybridc.import_hf(tmp_path / "orig")
