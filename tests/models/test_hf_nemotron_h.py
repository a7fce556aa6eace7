"""Whole-model check: transformers' NemotronHForCausalLM == hybridc `pattern "M*M-"` at a tiny size.

Layer kinds: Mamba-2 (2 groups), attention (GQA, no positional encoding, no QK-norm), the relu2 MLP (no bias), each
one pre-norm block with no FFN after it (`ffn after=none`).
Mapping (names only, same layouts): `model.embeddings` -> `embed`, `model.layers.i.{norm,mixer.*}` ->
`layers.i.{norm,mixer.*}` except the MLP's `up_proj` / `down_proj` -> `up` / `down`, `model.norm_f` -> `norm_f`.
"""
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, report, rules  # noqa: E402

D, V, N, P, G, HIDDEN = 64, 100, 16, 16, 2, 96
DT_MIN = 0.05  # NemotronH clamps dt at time_step_min (`dt_min=`): 0.05 acts on many dt here (fails without it)
EPS = 1e-5  # every norm (blocks, final, the mixer's gated norm): `norm rms eps=1e-5`

MAPPING = rules(
    (r"model\.embeddings\.weight", "embed.weight"),
    (r"model\.norm_f\.weight", "norm_f.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"model\.layers\.(\d+)\.mixer\.(up|down)_proj\.weight", r"layers.\1.mixer.\2.weight"),
    (r"model\.layers\.(\d+)\.(norm\.weight|mixer\..+)", r"layers.\1.\2"),
)


def test_nemotron_h_for_causal_lm(tmp_path):
    cfg = tf.NemotronHConfig(vocab_size=V, hidden_size=D, layers_block_type=["mamba", "attention", "mamba", "mlp"],
                             ssm_state_size=N, mamba_num_heads=2 * D // P, mamba_head_dim=P, n_groups=G,
                             conv_kernel=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                             intermediate_size=HIDDEN, mlp_hidden_act="relu2", mlp_bias=False, attention_bias=False,
                             use_bias=False, use_conv_bias=True, layer_norm_epsilon=EPS, tie_word_embeddings=False,
                             time_step_min=DT_MIN)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = tf.NemotronHForCausalLM(cfg)
    program = (f'pattern "M*M-"; dim {D}; vocab {V}; output logits; norm rms eps={EPS}; dropout 0; ffn after=none; '
               f"mamba2 state={N} expand=2 conv=4 head_dim={P} groups={G} dt_min={DT_MIN}; "
               f"attn heads=4 kv_heads=2 head_dim=16 rope=false qk_norm=none window=none; "
               f"mlp act=relu2 bias=false hidden={HIDDEN}")
    report("nemotron_h", check_whole(hf, program, MAPPING, vocab=V))
