"""Bamba through `import-hf`: Mamba-2 and attention layers (GQA, partial RoPE), SwiGLU FFNs, a padding token,
a sharded checkpoint (tests/hf/_harness.py)."""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _harness import check_family  # noqa: E402

D, V = 64, 100


def test_bamba(tmp_path):
    cfg = tf.BambaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=3, attn_layer_indices=[1], mamba_d_state=16,
                         mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2, mamba_d_conv=4, mamba_chunk_size=8,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=96, rms_norm_eps=1e-5,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
                         time_step_limit=(0.01, 10.0), tie_word_embeddings=False, pad_token_id=0)
    torch.manual_seed(0)
    hf = tf.BambaForCausalLM(cfg)
    check_family(hf, tmp_path, vocab=V, shard=True,
                 expect_in_text=("layers mamba2 attn mamba2", "pad_token 0", "groups=2", "dt_min=0.01"))
