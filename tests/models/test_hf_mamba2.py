"""Whole-model check: transformers' Mamba2ForCausalLM == hybridc `layers mamba2 x2` at a tiny size (2 groups).

Mapping (names only, same layouts: in_proj rows [z, x, B, C, dt], groupwise gated norm):
`backbone.embeddings` -> `embed`, `backbone.layers.i.{norm,mixer.*}` -> `layers.i.{norm,mixer.*}`,
`backbone.norm_f` -> `norm_f`, `lm_head` -> `lm_head`.
"""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, report, rules  # noqa: E402

D, V, N, P, G, LAYERS = 64, 100, 16, 16, 2, 2
EPS = 1e-5  # every norm (blocks, final, the mixer's gated norm): `norm rms eps=1e-5`

MAPPING = rules(
    (r"backbone\.embeddings\.weight", "embed.weight"),
    (r"backbone\.norm_f\.weight", "norm_f.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"backbone\.layers\.(\d+)\.(norm\.weight|mixer\..+)", r"layers.\1.\2"),
)


def test_mamba2_for_causal_lm(tmp_path):
    cfg = tf.Mamba2Config(vocab_size=V, hidden_size=D, state_size=N, num_hidden_layers=LAYERS, expand=2,
                          conv_kernel=4, head_dim=P, num_heads=2 * D // P, n_groups=G, use_bias=False,
                          use_conv_bias=True, tie_word_embeddings=False, layer_norm_epsilon=EPS)
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = tf.Mamba2ForCausalLM(cfg)
    program = (f"layers mamba2 x{LAYERS}; dim {D}; vocab {V}; output logits; norm rms eps={EPS}; dropout 0; "
               f"mamba2 state={N} expand=2 conv=4 head_dim={P} groups={G}")
    report("mamba2", check_whole(hf, program, MAPPING, vocab=V))
