"""NemotronH through `import-hf`: Mamba-2 (2 groups, dt clamped at time_step_min), attention (GQA, no positional
encoding) and relu2 MLP blocks, one mixer per pre-norm block (tests/hf/_harness.py); older config spellings; the
MoE block and other configs hybridc cannot express are refused by field."""

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import hybridc  # noqa: E402
from _harness import check_family, reads_as_zoo_program, written_config  # noqa: E402
from hybridc.hf import export_family  # noqa: E402

D, V = 64, 100
DT_MIN = 0.05  # acts on many dt of the prompt here (the logits differ without the clamp)
TYPES = ["linear_attention", "full_attention", "linear_attention", "mlp"]


def tiny(**kw):
    return tf.NemotronHConfig(**{**dict(
        vocab_size=V, hidden_size=D, layers_block_type=TYPES, ssm_state_size=16, mamba_num_heads=8, mamba_head_dim=16,
        n_groups=2, conv_kernel=4, chunk_size=8, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        intermediate_size=96, mlp_hidden_act="relu2", mlp_bias=False, use_bias=False, use_conv_bias=True,
        layer_norm_epsilon=1e-5, tie_word_embeddings=False, time_step_min=DT_MIN), **kw})


def test_nemotron_h(tmp_path):
    torch.manual_seed(0)
    hf = tf.NemotronHForCausalLM(tiny())
    assert [type(l.mixer).__name__ for l in hf.model.layers] == [
        "NemotronHMamba2Mixer", "NemotronHAttention", "NemotronHMamba2Mixer", "NemotronHMLP"]
    check_family(hf, tmp_path, vocab=V, expect_in_text=("layers mamba2 attn mamba2 mlp", "dt_min=0.05",
                                                        "mlp act=relu2 hidden=96 bias=false"))


def config_file(tmp_path, drop=(), **fields):
    return written_config(tmp_path, tiny(), drop, **fields)


def test_nemotron_h_multi_token_prediction_tensors_are_left_unread(tmp_path):
    """Checkpoints with num_nextn_predict_layers hold mtp.* tensors transformers does not load: neither does hybridc."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    tf.NemotronHForCausalLM(tiny(num_nextn_predict_layers=1)).save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    save_file(tensors | {"mtp.layers.0.norm.weight": torch.ones(D)}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    net = hybridc.load_hf_weights(hybridc.build(hybridc.load_hf(tmp_path), backend="torch"), tmp_path)
    assert torch.equal(net.state_dict()["embed.weight"], tensors["backbone.embeddings.weight"])


def test_nemotron_h_older_spellings_read_the_same(tmp_path):
    want = hybridc.import_hf(config_file(tmp_path / "new"))
    old = config_file(tmp_path / "old", drop=("layers_block_type", "n_groups", "conv_kernel", "time_step_min"),
                      hybrid_override_pattern="M*M-", mamba_n_groups=2, mamba_d_conv=4, mamba_dt_min=DT_MIN,
                      num_hidden_layers=4, rms_norm_eps=1e-5, attention_head_dim=16, time_step_rank=4)
    assert hybridc.import_hf(old) == want
    msg = refused(config_file(tmp_path / "disagree", attention_head_dim=32))
    assert "'attention_head_dim' = 32" in msg and "reads head_dim (16)" in msg, msg


def refused(path) -> str:
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.import_hf(path)
    return str(e.value)


def test_nemotron_h_moe_block_is_refused(tmp_path):
    msg = refused(config_file(tmp_path, layers_block_type=["linear_attention", "moe"]))
    assert "'layers_block_type'" in msg and "e_score_correction_bias" in msg, msg


def test_nemotron_h_attention_dropout_is_refused(tmp_path):
    msg = refused(config_file(tmp_path, attention_dropout=0.1))
    assert "'attention_dropout' = 0.1" in msg and "no dropout" in msg, msg


def test_nemotron_h_export_refuses_rope():
    m = hybridc.load("model nemotron_h\ndim 64\nvocab 100\noutput logits\nnorm rms eps=1e-5\ndropout 0\nffn after=none\n"
                     "attn heads=4 head_dim=16 rope=true window=none qk_norm=none\nlayers attn mlp\n")
    with pytest.raises(hybridc.HybridcError) as e:
        export_family(m, "nemotron_h")
    assert "nemotron_h: attn: NemotronH's attention is global, without positional encoding" in str(e.value)


def test_nemotron_h_export_refuses_an_unclamped_mamba2():
    m = hybridc.load("model nemotron_h\ndim 64\nvocab 100\noutput logits\nnorm rms eps=1e-5\ndropout 0\n"
                     "mamba2 state=16 head_dim=16\nlayers mamba2 x2\n")
    with pytest.raises(hybridc.HybridcError) as e:
        export_family(m, "nemotron_h")
    assert "nemotron_h: mamba2 dt_min=0: NemotronH clamps dt at time_step_min" in str(e.value), str(e.value)


def test_nemotron_h_8b_config_reads_as_the_zoo_program(tmp_path):
    """The published config (tests/zoo's values) imports as examples/zoo/nemotron_h_8b.hyb: the same layers and count."""
    reads_as_zoo_program(tmp_path, tf.NemotronHConfig, "nemotron_h_8b")
