"""Jamba through `import-hf`: Mamba-1 layers with weighted dt/B/C norms, attention (GQA, no positional encoding),
SwiGLU FFNs and the sparse MoE (4 experts, top-2, unrenormalised) on every other layer; a padding token
(tests/hf/_harness.py)."""

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import hybridc  # noqa: E402
from _harness import check_family, refused  # noqa: E402
from hybridc.hf import export_family  # noqa: E402

D, V = 64, 100


def config(**kw):
    base = dict(vocab_size=V, hidden_size=D, num_hidden_layers=4, attn_layer_period=4, attn_layer_offset=1,
                num_experts=4, num_experts_per_tok=2, expert_layer_period=2, expert_layer_offset=1, mamba_d_state=16,
                mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=4, mamba_conv_bias=True, mamba_proj_bias=False,
                num_attention_heads=4, num_key_value_heads=2, intermediate_size=96, rms_norm_eps=1e-6,
                tie_word_embeddings=False, pad_token_id=0)
    return tf.JambaConfig(**{**base, **kw})


def test_jamba(tmp_path):
    torch.manual_seed(0)
    hf = tf.JambaForCausalLM(config())
    assert [type(b.feed_forward).__name__ for b in hf.model.layers] == \
        ["JambaMLP", "JambaSparseMoeBlock", "JambaMLP", "JambaSparseMoeBlock"]
    assert [type(b).__name__ for b in hf.model.layers][1] == "JambaAttentionDecoderLayer"
    check_family(hf, tmp_path, vocab=V, shard=True,
                 expect_in_text=("layers mamba attn mamba x2", "moe every=2 offset=1 experts=4 renorm=false",
                                 "inner_norm=weighted", "pad_token 0"))


def _bad(tmp_path, **fields):
    return refused(tmp_path, tf.JambaConfig(**config().to_dict()), **fields)


@pytest.mark.parametrize("field,value,why", [
    ("hidden_act", "gelu", "SiLU only"),
    ("attention_dropout", 0.1, "no dropout"),
    ("num_experts_per_tok", 5, "between 1 and num_experts"),
    ("attn_layer_offset", 4, "below the period"),
    ("sliding_window", 4096, "only null"),
], ids=["act", "dropout", "top_k", "offset", "window"])
def test_jamba_bad_config(tmp_path, field, value, why):
    msg = _bad(tmp_path, **{field: value})
    assert f"'{field}'" in msg and why in msg and "config.json" in msg, msg


def test_jamba_export_refuses_what_it_has_not():
    m = hybridc.load("model jamba; dim 64; vocab 100; output logits; norm rms eps=1e-6; dropout 0; "
                     "ffn after=all act=silu gated=true bias=false hidden=96; mamba inner_norm=weighted eps=1e-6; "
                     "attn heads=4 head_dim=16 rope=true window=none; layers mamba attn mamba")
    with pytest.raises(hybridc.HybridcError, match="jamba: attn: Jamba's attention is global, no positional"):
        export_family(m, "jamba")
