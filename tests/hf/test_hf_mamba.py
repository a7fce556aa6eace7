"""Mamba through `import-hf`: Mamba-1 blocks with biases on in_proj/out_proj, a tied head, a sharded checkpoint
(tests/hf/_harness.py); a config hybridc cannot express is refused by field."""

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _harness import check_family, reads_as_zoo_program, refused  # noqa: E402

D, V = 64, 100


def tiny(**kw):
    return tf.MambaConfig(**{**dict(vocab_size=V, hidden_size=D, state_size=16, num_hidden_layers=2, expand=2,
                                    conv_kernel=4, use_bias=True, use_conv_bias=True, time_step_rank=8,
                                    tie_word_embeddings=True, layer_norm_epsilon=1e-5), **kw})


def test_mamba(tmp_path):
    torch.manual_seed(0)
    hf = tf.MambaForCausalLM(tiny())
    assert "lm_head.weight" not in dict(hf.named_parameters())  # tied: the head is the embedding
    check_family(hf, tmp_path, vocab=V, shard=True,
                 expect_in_text=("layers mamba x2", "tie_embeddings true", "dt_rank=8", "proj_bias=true"))


def bad(tmp_path, **fields):
    return refused(tmp_path, tiny(), **fields)


def test_mamba_activation_hybridc_lacks_is_refused(tmp_path):
    msg = bad(tmp_path, hidden_act="gelu")
    assert "'hidden_act' = \"gelu\"" in msg and "silu" in msg and "config.json" in msg, msg


def test_mamba_layer_norm_blocks_are_refused(tmp_path):
    msg = bad(tmp_path, rms_norm=False)  # mamba_ssm's LayerNorm blocks: not what transformers' Mamba computes
    assert "'rms_norm' = false" in msg and "RMSNorm only" in msg, msg


def test_mamba_unknown_field_is_refused(tmp_path):
    msg = bad(tmp_path, mixer_rms_eps=1e-6)  # FalconMamba's inner norms in a Mamba config: not the same computation
    assert "'mixer_rms_eps'" in msg and "does not know this field" in msg, msg


def test_mamba_130m_config_reads_as_the_zoo_program(tmp_path):
    """The published config (tests/zoo's values) imports as examples/zoo/mamba_130m.hyb: the same layers and count."""
    reads_as_zoo_program(tmp_path, tf.MambaConfig, "mamba_130m")
