"""The whole-model harness's own error (tests/models/_hf_whole.py): a wrong mapping lists every unmapped, unused and
misshapen name (moved here from the Mamba check, which is now tests/hf/test_hf_mamba.py)."""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, rules  # noqa: E402

D, V, N, LAYERS = 64, 100, 16, 2


def test_a_wrong_mapping_lists_every_unmapped_unused_and_misshapen_name():
    """The harness's error: transformers names never read, names we lack, ours never produced, shape mismatches."""
    cfg = tf.MambaConfig(vocab_size=V, hidden_size=D, state_size=N, num_hidden_layers=LAYERS, expand=2,
                         conv_kernel=4, tie_word_embeddings=True, layer_norm_epsilon=1e-5)
    hf = tf.MambaForCausalLM(cfg)
    wrong = rules(
        (r"backbone\.embeddings\.weight", "embed.weight"),
        (r"backbone\.norm_f\.weight", "final_norm.weight"),                          # not our name
        (r"backbone\.layers\.0\.mixer\.D", "layers.0.mixer.D", lambda t, m: t[:3]),  # wrong shape
        (r"backbone\.layers\.(\d+)\.(norm\.weight|mixer\.(?!A_log|D).+)", r"layers.\1.\2"),
    )
    program = f"layers mamba x{LAYERS}; dim {D}; vocab {V}; output logits; tie_embeddings true; norm rms; dropout 0; " \
              f"mamba state={N} expand=2 conv=4 dt_rank={cfg.time_step_rank}"
    with pytest.raises(AssertionError) as e:
        check_whole(hf, program, wrong, vocab=V)
    msg = str(e.value)
    for expected in ("never read:\n  backbone.layers.0.mixer.A_log (128, 16)", "backbone.layers.1.mixer.D (128,)",
                     "our model lacks:\n  final_norm.weight (64,)", "never produced:\n  layers.0.mixer.A_log",
                     "norm_f.weight (64,)", "layers.0.mixer.D: mapped (3,), ours (128,)"):
        assert expected in msg, msg
