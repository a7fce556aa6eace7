"""Mamba-2 through `import-hf`: SSD blocks with 2 B/C groups, biases on in_proj/out_proj, a dt clamp
(time_step_limit), chunks shorter than the prompt, an untied head (tests/hf/_harness.py); a config hybridc cannot
express is refused by field."""

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _harness import check_family, reads_as_zoo_program, refused  # noqa: E402

D, V = 64, 100


def tiny(**kw):
    return tf.Mamba2Config(**{**dict(vocab_size=V, hidden_size=D, state_size=16, num_hidden_layers=2, expand=2,
                                     conv_kernel=4, head_dim=16, num_heads=8, n_groups=2, chunk_size=8, use_bias=True,
                                     use_conv_bias=True, time_step_limit=(0.0, 10.0), tie_word_embeddings=False,
                                     layer_norm_epsilon=1e-5), **kw})


def test_mamba2(tmp_path):
    torch.manual_seed(0)
    hf = tf.Mamba2ForCausalLM(tiny())
    check_family(hf, tmp_path, vocab=V,
                 expect_in_text=("layers mamba2 x2", "groups=2", "chunk=8", "dt_max=10", "proj_bias=true"))


def test_mamba2_heads_that_do_not_fill_the_width_are_refused(tmp_path):
    msg = refused(tmp_path, tiny(), num_heads=6)
    assert "'num_heads' = 6" in msg and "num_heads x head_dim = 96 but expand x hidden_size = 128" in msg, msg


def test_mamba2_2_7b_config_reads_as_the_zoo_program(tmp_path):
    """The published config (tests/zoo's values) imports as examples/zoo/mamba2_2.7b.hyb: the same layers and count."""
    reads_as_zoo_program(tmp_path, tf.Mamba2Config, "mamba2_2.7b")
