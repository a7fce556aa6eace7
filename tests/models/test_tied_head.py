"""Tied embeddings in both backends: torch's head is `embed.weight` (one Parameter, one name), JAX has no
`lm_head.weight`; one safetensors file moves the weights both ways; the count equals transformers'
MambaForCausalLM with `tie_word_embeddings=True`."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

import hybridc  # noqa: E402

TIED = "layers mamba attn; dim 32; vocab 40; output logits; tie_embeddings true; attn heads=2 head_dim=16; dropout 0"


def test_torch_head_is_the_embedding_parameter():
    torch.manual_seed(0)
    net = hybridc.build(TIED)
    names = [n for n, _ in net.named_parameters()]
    assert net.lm_head.weight is net.embed.weight and "embed.weight" in names and "lm_head.weight" not in names
    assert sum(p.numel() for p in net.parameters()) == hybridc.describe(hybridc.load(TIED))["params"]
    ids = torch.randint(0, 40, (2, 5))
    net(ids).sum().backward()
    assert net.embed.weight.grad is not None


def test_jax_uses_embed_weight_and_one_file_serves_both(tmp_path):
    torch.manual_seed(0)
    tn, jn = hybridc.build(TIED), hybridc.build(TIED, backend="jax")
    assert "lm_head.weight" not in jn.init(jax.random.PRNGKey(0))
    path = tmp_path / "w.safetensors"
    hybridc.save_weights(tn, path)
    params = hybridc.load_weights(jn, path)
    assert sorted(params) == sorted(n for n, _ in tn.named_parameters())
    ids = torch.randint(0, 40, (2, 7))
    want = tn(ids).detach().numpy()
    np.testing.assert_allclose(np.asarray(jn.apply(params, ids.numpy())), want, atol=1e-5, rtol=1e-5)
    hybridc.save_weights(params, path)  # and back into a fresh torch model
    torch.manual_seed(1)
    again = hybridc.load_weights(hybridc.build(TIED), path)
    assert again.lm_head.weight is again.embed.weight
    np.testing.assert_allclose(again(ids).detach().numpy(), want, atol=1e-6)


def test_count_matches_transformers_mamba_for_causal_lm():
    tf = pytest.importorskip("transformers")
    d, v, n, layers = 32, 50, 4, 3
    cfg = tf.MambaConfig(vocab_size=v, hidden_size=d, state_size=n, num_hidden_layers=layers, expand=2,
                         conv_kernel=4, use_bias=False, use_conv_bias=True, tie_word_embeddings=True)
    ref = tf.MambaForCausalLM(cfg)
    assert ref.lm_head.weight is ref.backbone.embeddings.weight
    m = hybridc.load(f"layers mamba x{layers}; dim {d}; vocab {v}; output logits; tie_embeddings true; norm rms; "
                     f"mamba state={n} expand=2 conv=4 dt_rank={cfg.time_step_rank}")
    assert hybridc.describe(m)["params"] == sum(p.numel() for p in ref.parameters())  # unique Parameters
