"""Falcon-H1 through `import-hf`: parallel `mamba2|attn` blocks summed (`fusion sum`), every muP multiplier away
from 1, a Mamba-2 width (mamba_d_ssm) other than expand x dim with its gated group norm before the gate, dt clamped,
biases everywhere, GQA with an explicit head_dim, an untied head, a padding token (tests/hf/_harness.py); and the
config values hybridc refuses, by name."""
import json

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import hybridc  # noqa: E402
from _harness import check_family, written_config  # noqa: E402

D, V = 64, 100
MUP = dict(ssm_in_multiplier=0.6, ssm_out_multiplier=1.4, ssm_multipliers=[0.5, 1.5, 0.7, 1.3, 0.8],
           attention_in_multiplier=0.75, attention_out_multiplier=1.25, key_multiplier=1.6, mlp_multipliers=[0.4, 1.7],
           embedding_multiplier=5.0, lm_head_multiplier=0.3)


def config(**kw):
    base = dict(vocab_size=V, hidden_size=D, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=8, intermediate_size=96, mamba_d_ssm=96, mamba_n_heads=6, mamba_d_head=16, mamba_n_groups=2,
                mamba_d_state=16, mamba_d_conv=4, mamba_chunk_size=8, mamba_rms_norm=True,
                mamba_norm_before_gate=True, mamba_proj_bias=True, projectors_bias=True, mamba_conv_bias=True,
                attention_bias=True, mlp_bias=True, time_step_limit=(0.01, 10.0), rms_norm_eps=1e-5,
                rope_parameters={"rope_type": "default", "rope_theta": 5000.0}, tie_word_embeddings=False,
                pad_token_id=2, **MUP)
    return tf.FalconH1Config(**(base | kw))


def test_falcon_h1(tmp_path):
    torch.manual_seed(0)
    hf = tf.FalconH1ForCausalLM(config())
    layer = hf.model.layers[0]
    assert type(layer.mamba).__name__ == "FalconH1Mixer" and type(layer.self_attn).__name__ == "FalconH1Attention"
    assert layer.mamba.norm.weight.shape == (96,) and layer.self_attn.q_proj.out_features == 32
    check_family(hf, tmp_path, vocab=V, expect_in_text=(
        "layers mamba2|attn x2", "fusion sum", "embed_scale 5", "logit_scale 0.3", "pad_token 2", "inner=96",
        "norm_before_gate=true", "key_scale=1.6", "z_scale=0.5", "gate_scale=0.4", "dt_min=0.01"))


def _written(tmp_path, **changes):
    return written_config(tmp_path, config(), **changes)


@pytest.mark.parametrize("field, value, words", [
    ("projectors_bias", False, "mamba_proj_bias"),
    ("hidden_act", "gelu", "silu"),
    ("mlp_multipliers", [0.4, -1.0], "positive"),
    ("rope_parameters", {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}, "every channel"),
    ("mamba_d_head", 8, "mamba_n_heads x mamba_d_head"),
], ids=["projectors-bias", "activation", "multiplier", "partial-rope", "mamba-width"])
def test_falcon_h1_refuses(tmp_path, field, value, words):
    path = _written(tmp_path, **{field: value})
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.import_hf(path)
    msg = str(e.value)
    assert f"field '{field}'" in msg and words in msg and "config.json:" in msg, msg


def test_falcon_h1_without_mamba_norm(tmp_path):
    """mamba_rms_norm=false (out_proj(y * silu(z)), no norm weight; the mixer's math: tests/models/test_hf_scaled.py):
    norm_before_gate, which then changes nothing, reads as false, and the exported config reads back the same."""
    path = _written(tmp_path, mamba_rms_norm=False)
    text = hybridc.import_hf(path)
    assert "out_norm=false" in text and "norm_before_gate" not in text, text
    fam, cfg = hybridc.hf.export_family(hybridc.load(text))
    assert fam.MODEL_TYPE == "falcon_h1" and cfg["mamba_rms_norm"] is False
    assert hybridc.describe(hybridc.load(text))["params"] == sum(
        p.numel() for p in tf.FalconH1ForCausalLM(config(mamba_rms_norm=False)).parameters())


def test_falcon_h1_original_spelling(tmp_path):
    """tiiuae/Falcon-H1's config.json spelling (top-level `rope_theta`, `rope_scaling` null, `mamba_d_head` "auto",
    `mamba_use_mlp`, `attn_layer_indices`, `mlp_expansion_factor`), scaled down, reads as transformers reads it (the
    program of its re-saved config)."""
    src = {"architectures": ["FalconH1ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
           "attention_in_multiplier": 1.0, "attention_out_multiplier": 0.9375, "attn_layer_indices": None,
           "bos_token_id": 1, "embedding_multiplier": 5.656854249492381, "eos_token_id": 11, "head_dim": 16,
           "hidden_act": "silu", "hidden_size": D, "initializer_range": 0.02, "intermediate_size": 128,
           "key_multiplier": 0.390625, "lm_head_multiplier": 0.0390625, "mamba_chunk_size": 128,
           "mamba_conv_bias": True, "mamba_d_conv": 4, "mamba_d_head": "auto", "mamba_d_ssm": 96, "mamba_d_state": 16,
           "mamba_expand": 2, "mamba_n_groups": 1, "mamba_n_heads": 6, "mamba_norm_before_gate": False,
           "mamba_proj_bias": False, "mamba_rms_norm": False, "mamba_use_mlp": True, "max_position_embeddings": 16384,
           "mlp_bias": False, "mlp_expansion_factor": 8, "mlp_multipliers": [0.88, 0.59], "model_type": "falcon_h1",
           "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "num_logits_to_keep": 1,
           "pad_token_id": 0, "projectors_bias": False, "rms_norm_eps": 1e-05, "rope_scaling": None,
           "rope_theta": 1e11, "ssm_in_multiplier": 1.25, "ssm_multipliers": [0.35, 0.25, 0.35, 0.5, 0.35],
           "ssm_out_multiplier": 0.2357, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "use_cache": True, "vocab_size": V}
    (tmp_path / "orig").mkdir()
    (tmp_path / "orig" / "config.json").write_text(json.dumps(src))
    tf.AutoConfig.from_pretrained(tmp_path / "orig").save_pretrained(tmp_path / "resaved")
    text = hybridc.import_hf(tmp_path / "orig")
    assert text == hybridc.import_hf(tmp_path / "resaved")
    assert "head_dim=16" in text and "rope_base=100000000000" in text and "embed_scale 5.656854249492381" in text
