"""Zamba2 through `import-hf`: Mamba-2 layers (dt clamped at time_step_min), two shared attention blocks (RoPE,
concat(hidden, embeddings) in) used in turn by three hybrid layers, each with its own q/k/v and MLP adapters and
`linear`; the MLP's fused gate_up_proj split; a tied head and a padding token (tests/hf/_harness.py)."""

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import hybridc  # noqa: E402
from _harness import check_family, refused  # noqa: E402
from hybridc.hf import export_family  # noqa: E402

D, V = 64, 100
TYPES = ["mamba", "hybrid", "mamba", "hybrid", "hybrid"]


def config(**kw):
    base = dict(vocab_size=V, hidden_size=D, num_hidden_layers=len(TYPES), layers_block_type=TYPES, mamba_d_state=16,
                mamba_d_conv=4, mamba_expand=2, mamba_ngroups=2, n_mamba_heads=4, intermediate_size=96,
                hidden_act="gelu", num_attention_heads=4, num_mem_blocks=2, use_shared_attention_adapter=True,
                adapter_rank=8, use_mem_rope=True, rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
                rms_norm_eps=1e-5, time_step_min=0.05, chunk_size=8, tie_word_embeddings=True, pad_token_id=0)
    return tf.Zamba2Config(**{**base, **kw})


def test_zamba2(tmp_path):
    torch.manual_seed(0)
    hf = tf.Zamba2ForCausalLM(config())
    assert [type(b).__name__ for b in hf.model.layers] == \
        ["Zamba2MambaDecoderLayer", "Zamba2HybridLayer", "Zamba2MambaDecoderLayer", "Zamba2HybridLayer",
         "Zamba2HybridLayer"]
    check_family(hf, tmp_path, vocab=V, shard=True,
                 expect_in_text=("layers mamba2 attn mamba2 x2 attn mamba2 attn mamba2",
                                 "share attn blocks=2 input=concat lora=8 into=next", "dt_min=0.05", "rope=true",
                                 "pad_token 0"))


def test_zamba2_mlp_adapters_only(tmp_path):
    """Without attention adapters (`lora_on=mlp`: the MLP's are always there), one block, biases on the linears,
    no RoPE: logits and export only."""
    torch.manual_seed(0)
    hf = tf.Zamba2ForCausalLM(config(use_shared_attention_adapter=False, num_mem_blocks=1, use_mem_rope=False,
                                     add_bias_linear=True, mamba_ngroups=1))
    check_family(hf, tmp_path, vocab=V, jax=False, generate=0,
                 expect_in_text=("share attn input=concat lora=8 lora_on=mlp into=next",))


def _bad(tmp_path, **fields):
    return refused(tmp_path, config(), **fields)


@pytest.mark.parametrize("field,value,why", [
    ("rms_norm_eps", 1e-6, "fixed at eps 1e-05"),
    ("tie_word_embeddings", False, "unties Zamba2's shared blocks"),
    ("rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0}, "only the default RoPE"),
    ("num_key_value_heads", 2, "k/v adapters"),
], ids=["eps", "untied", "rope", "gqa_adapters"])
def test_zamba2_bad_config(tmp_path, field, value, why):
    msg = _bad(tmp_path, **{field: value})
    assert f"'{field}'" in msg and why in msg and "config.json" in msg, msg


def test_zamba2_export_refuses_what_it_has_not():
    m = hybridc.load("model zamba2; dim 64; vocab 100; output logits; tie_embeddings true; norm rms eps=1e-5; "
                     "dropout 0; ffn gated=true hidden=96; mamba2 state=16 head_dim=32 chunk=8; attn heads=4 "
                     "head_dim=32 window=none qk_norm=none scale=0.25; layers mamba2 attn mamba2; "
                     "share attn input=concat lora=4 lora_on=attn into=next")
    with pytest.raises(hybridc.HybridcError, match="zamba2: share lora: Zamba2's shared MLP always has"):
        export_family(m, "zamba2")
