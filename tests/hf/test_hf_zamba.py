"""Zamba through `import-hf`: two-head Mamba-1 layers, one shared attention block (concat(hidden, embeddings) in,
(head_dim / 2) ** -0.5 scale, gated GELU MLP) called at two hybrid layers, each through its own `linear` into the
next Mamba's input; a tied head and a padding token (tests/hf/_harness.py)."""

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import hybridc  # noqa: E402
from _harness import check_family, refused  # noqa: E402
from hybridc.hf import export_family  # noqa: E402

D, V = 64, 100


def config(**kw):
    base = dict(vocab_size=V, hidden_size=D, num_hidden_layers=5, attn_layer_period=2, attn_layer_offset=1,
                n_mamba_heads=2, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=4,
                num_attention_heads=4, num_key_value_heads=4, intermediate_size=96, hidden_act="gelu",
                rms_norm_eps=1e-5, tie_word_embeddings=True, pad_token_id=0)
    return tf.ZambaConfig(**{**base, **kw})


def test_zamba(tmp_path):
    cfg = config()
    assert cfg.layers_block_type == ["linear_attention", "linear_attention", "hybrid", "linear_attention", "hybrid"]
    torch.manual_seed(0)
    hf = tf.ZambaForCausalLM(cfg)
    check_family(hf, tmp_path, vocab=V,
                 expect_in_text=("layers mamba x2 attn mamba x2 attn mamba", "share attn input=concat into=next",
                                 "tie_embeddings true", "pad_token 0", "heads=2"))


def test_zamba_one_head_untied(tmp_path):
    """One Mamba head (in_proj's interleaved x/z rows de-interleaved), GQA, and untied embeddings, with which
    transformers unties the shared blocks too (`share attn blocks=2`): logits and export only."""
    torch.manual_seed(0)
    hf = tf.ZambaForCausalLM(config(n_mamba_heads=1, num_key_value_heads=2, tie_word_embeddings=False))
    check_family(hf, tmp_path, vocab=V, jax=False, generate=0, expect_in_text=("share attn blocks=2",))


def _bad(tmp_path, **fields):
    return refused(tmp_path, config(), **fields)


@pytest.mark.parametrize("field,value,why", [
    ("hidden_mamba_act", "gelu", "SiLU only"),
    ("attention_hidden_size", 64, "concat(hidden, embeddings)"),
    ("layers_block_type", ["hybrid", "attention", "hybrid", "hybrid", "hybrid"], "a list of"),
    ("hidden_act", "gelu_fast", "no such activation"),
], ids=["mamba_act", "attention_width", "block_type", "act"])
def test_zamba_bad_config(tmp_path, field, value, why):
    msg = _bad(tmp_path, **{field: value})
    assert f"'{field}'" in msg and why in msg and "config.json" in msg, msg


def test_zamba_export_refuses_what_it_has_not():
    m = hybridc.load("model zamba; dim 64; vocab 100; output logits; tie_embeddings true; norm rms eps=1e-5; "
                     "dropout 0; ffn gated=true hidden=96; mamba heads=2 dt_rank=4; attn heads=4 head_dim=32 "
                     "window=none qk_norm=none scale=0.25; layers mamba attn mamba; "
                     "share attn input=concat lora=4 into=next")
    with pytest.raises(hybridc.HybridcError, match="zamba: share lora: Zamba's shared block has no adapters"):
        export_family(m, "zamba")
