"""Whole-model check: transformers' FalconMambaForCausalLM (tied head) == hybridc `layers mamba x2` with weightless
RMSNorms on dt, B and C inside the mixer (`inner_norm=plain eps=1e-6`, FalconMamba's mixer_rms_eps) and block norms
at eps 1e-5 (`norm rms eps=1e-5`, its layer_norm_epsilon).

Mapping (names only, same layouts; the inner norms have no weights): `backbone.embeddings` -> `embed` (the tied head
comes with it), `backbone.layers.i.{norm,mixer.*}` -> `layers.i.{norm,mixer.*}`, `backbone.norm_f` -> `norm_f`.
"""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, report, rules  # noqa: E402

D, V, N, LAYERS, EPS, MIXER_EPS = 64, 100, 16, 2, 1e-5, 1e-6

MAPPING = rules(
    (r"backbone\.embeddings\.weight", "embed.weight"),
    (r"backbone\.norm_f\.weight", "norm_f.weight"),
    (r"backbone\.layers\.(\d+)\.(norm\.weight|mixer\..+)", r"layers.\1.\2"),
)


def test_falcon_mamba_for_causal_lm(tmp_path):
    cfg = tf.FalconMambaConfig(vocab_size=V, hidden_size=D, state_size=N, num_hidden_layers=LAYERS, expand=2,
                               conv_kernel=4, use_bias=False, use_conv_bias=True, tie_word_embeddings=True,
                               layer_norm_epsilon=EPS, mixer_rms_eps=MIXER_EPS)
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = tf.FalconMambaForCausalLM(cfg)
    program = (f"layers mamba x{LAYERS}; dim {D}; vocab {V}; output logits; tie_embeddings true; norm rms eps={EPS}; "
               f"dropout 0; mamba state={N} expand=2 conv=4 dt_rank={cfg.time_step_rank} inner_norm=plain "
               f"eps={MIXER_EPS}")
    report("falcon_mamba", check_whole(hf, program, MAPPING, vocab=V))
