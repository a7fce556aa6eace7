"""FalconMamba through `import-hf`: Mamba-1 blocks with weightless RMSNorms on dt, B and C (`inner_norm=plain` at
mixer_rms_eps, block norms at layer_norm_epsilon), a tied head (tests/hf/_harness.py); export refuses a Mamba
without the inner norms as a FalconMamba; a config hybridc cannot express is refused by field."""

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import hybridc  # noqa: E402
from _harness import check_family, refused  # noqa: E402
from hybridc.hf import export_family  # noqa: E402

D, V = 64, 100


def tiny(**kw):
    return tf.FalconMambaConfig(**{**dict(vocab_size=V, hidden_size=D, state_size=16, num_hidden_layers=2, expand=2,
                                          conv_kernel=4, use_bias=False, use_conv_bias=True, tie_word_embeddings=True,
                                          layer_norm_epsilon=1e-5, mixer_rms_eps=1e-4), **kw})


def test_falcon_mamba(tmp_path):
    torch.manual_seed(0)
    hf = tf.FalconMambaForCausalLM(tiny())
    check_family(hf, tmp_path, vocab=V,
                 expect_in_text=("layers mamba x2", "inner_norm=plain eps=0.0001", "norm rms eps=1e-05"))


def test_falcon_mamba_export_needs_the_inner_norms():
    m = hybridc.load("model m\ndim 64\nvocab 100\noutput logits\nnorm rms eps=1e-5\ndropout 0\nlayers mamba x2\n")
    with pytest.raises(hybridc.HybridcError) as e:
        export_family(m, "falcon_mamba")
    assert "falcon_mamba: mamba inner_norm=none" in str(e.value), str(e.value)


def test_falcon_mamba_bad_time_step_rank_is_refused(tmp_path):
    msg = refused(tmp_path, tiny(), time_step_rank="half")
    assert "'time_step_rank' = \"half\"" in msg and "auto" in msg, msg
