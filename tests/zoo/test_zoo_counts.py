"""The zoo: `examples/zoo/<name>.hyb` against the published checkpoints, to the parameter.

For every zoo model transformers implements, transformers' `ForCausalLM` is built on the meta device from the
published `config.json` values written below (each with its checkpoint), its unique parameters are counted (a tied
head once), and hybridc's describe count of the zoo file must be EQUAL. Samba-421M and Hymba-1.5B have no
transformers class: their count must be within 0.5% of the published number, with the source cited.

For the mixture-of-experts models (Jamba, Qwen3-Next, Granite-4.0-H-Small) describe's active count (the parameters
one token uses: everything but the routed experts it is not sent to) must equal transformers' model less its unused
experts ((E - top_k) of every MoE block's stacked experts), and is compared with the published active count.

A zoo file that is missing or uses an option not implemented yet fails here (loudly, not skipped).
"""
from __future__ import annotations

from pathlib import Path

import pytest

import hybridc

ZOO = Path(__file__).resolve().parents[2] / "examples" / "zoo"

# Nemotron-H's hybrid_override_pattern, Granite-4.0-H-Micro's attention positions, LFM2's full_attn_idxs.
NEMOTRON_H_PATTERN = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
GRANITE_MICRO_ATTN = (5, 15, 25, 35)
LFM2_ATTN = (2, 5, 8, 10, 12, 14)
# Granite-4.0-H-Small's attention positions (its layer_types; as H-Micro's)
GRANITE_SMALL_ATTN = (5, 15, 25, 35)
# Zamba2-2.7B: a shared (hybrid) block before these 0-based layers (transformers' hybrid_layer_ids default)
ZAMBA2_HYBRID = (6, 12, 18, 24, 30, 36, 42, 47, 51)

# name -> (config class, model class, published config.json values). Only the keys that shape parameters and
# the switches that decide them are written; every value is the checkpoint's (see examples/zoo/<name>.hyb).
CASES = {
    # nvidia/Nemotron-H-8B-Base-8K config.json
    "nemotron_h_8b": ("NemotronHConfig", "NemotronHForCausalLM", dict(
        vocab_size=131072, hidden_size=4096, num_hidden_layers=52, hybrid_override_pattern=NEMOTRON_H_PATTERN,
        intermediate_size=21504, mlp_hidden_act="relu2", mlp_bias=False, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, attention_bias=False, ssm_state_size=128, mamba_num_heads=128,
        mamba_head_dim=64, n_groups=8, conv_kernel=4, expand=2, use_bias=False, use_conv_bias=True,
        layer_norm_epsilon=1e-5, tie_word_embeddings=False)),
    # ibm-ai-platform/Bamba-9B config.json
    "bamba_9b": ("BambaConfig", "BambaForCausalLM", dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, attn_layer_indices=[9, 18, 27], mamba_n_heads=128, mamba_d_head=64,
        mamba_n_groups=1, mamba_d_state=128, mamba_d_conv=4, mamba_expand=2, mamba_conv_bias=True,
        mamba_proj_bias=False, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    # tiiuae/Falcon-H1-7B-Base config.json (switches not in the excerpt found: the family's, see the .hyb)
    "falcon_h1_7b": ("FalconH1Config", "FalconH1ForCausalLM", dict(
        vocab_size=130048, hidden_size=3072, intermediate_size=12288, num_hidden_layers=44, num_attention_heads=12,
        num_key_value_heads=2, head_dim=128, mamba_d_ssm=3072, mamba_n_heads=24, mamba_d_head=128,
        mamba_n_groups=1, mamba_d_state=256, mamba_d_conv=4, mamba_expand=2, mamba_conv_bias=True,
        mamba_proj_bias=False, mamba_norm_before_gate=False, mamba_rms_norm=False, projectors_bias=False,
        attention_bias=False, mlp_bias=False, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    # google/recurrentgemma-2b config.json (intermediate_size 15360 = gate + up; transformers halves it)
    "recurrentgemma_2b": ("RecurrentGemmaConfig", "RecurrentGemmaForCausalLM", dict(
        vocab_size=256000, hidden_size=2560, intermediate_size=15360, num_hidden_layers=26, num_attention_heads=10,
        num_key_value_heads=1, head_dim=256, lru_width=2560, attention_window_size=2048, conv1d_width=4,
        logits_soft_cap=30.0, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh", attention_bias=False,
        block_types=["recurrent", "recurrent", "attention"], tie_word_embeddings=True)),
    # state-spaces/mamba-130m-hf config.json
    "mamba_130m": ("MambaConfig", "MambaForCausalLM", dict(
        vocab_size=50280, hidden_size=768, state_size=16, num_hidden_layers=24, expand=2, conv_kernel=4,
        time_step_rank=48, use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5, tie_word_embeddings=True)),
    # state-spaces/mamba2-2.7b config.json (mamba_ssm's Mamba2 defaults for what ssm_cfg leaves out)
    "mamba2_2.7b": ("Mamba2Config", "Mamba2ForCausalLM", dict(
        vocab_size=50288, hidden_size=2560, num_hidden_layers=64, state_size=128, num_heads=80, head_dim=64,
        n_groups=1, expand=2, conv_kernel=4, use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5,
        tie_word_embeddings=True)),
    # Zyphra/Zamba2-2.7B config.json (the .hyb is written by the Zamba2 sharing work)
    "zamba2_2.7b": ("Zamba2Config", "Zamba2ForCausalLM", dict(
        vocab_size=32000, hidden_size=2560, num_hidden_layers=54,
        layers_block_type=["hybrid" if i in ZAMBA2_HYBRID else "mamba" for i in range(54)],
        mamba_d_state=64, mamba_d_conv=4, mamba_expand=2, mamba_ngroups=1, n_mamba_heads=80,
        intermediate_size=10240, hidden_act="gelu", num_attention_heads=32, num_key_value_heads=32,
        num_mem_blocks=2, use_shared_attention_adapter=False, adapter_rank=128, use_mem_rope=False,
        add_bias_linear=False, use_conv_bias=True, rms_norm_eps=1e-5, tie_word_embeddings=True)),
    # LiquidAI/LFM2-1.2B config.json
    "lfm2_1.2b": ("Lfm2Config", "Lfm2ForCausalLM", dict(
        vocab_size=65536, hidden_size=2048, intermediate_size=12288, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, layer_types=["full_attention" if i in LFM2_ATTN else "conv" for i in range(16)],
        conv_L_cache=3, conv_bias=False, block_multiple_of=256, block_ffn_dim_multiplier=1.0,
        block_auto_adjust_ff_dim=True, norm_eps=1e-5, tie_word_embeddings=True)),
    # ibm-granite/granite-4.0-h-micro config.json
    "granite_4.0_h_micro": ("GraniteMoeHybridConfig", "GraniteMoeHybridForCausalLM", dict(
        vocab_size=100352, hidden_size=2048, intermediate_size=8192, shared_intermediate_size=8192,
        num_local_experts=0, num_experts_per_tok=0, num_hidden_layers=40, num_attention_heads=32,
        num_key_value_heads=8, layer_types=["attention" if i in GRANITE_MICRO_ATTN else "mamba" for i in range(40)],
        mamba_n_heads=64, mamba_d_head=64, mamba_n_groups=1, mamba_d_state=128, mamba_d_conv=4, mamba_expand=2,
        mamba_conv_bias=True, mamba_proj_bias=False, attention_bias=False, position_embedding_type="nope",
        embedding_multiplier=12.0, logits_scaling=8.0, residual_multiplier=0.22, attention_multiplier=0.015625,
        rms_norm_eps=1e-5, tie_word_embeddings=True)),
    # ai21labs/Jamba-v0.1 config.json
    "jamba_v0.1": ("JambaConfig", "JambaForCausalLM", dict(
        vocab_size=65536, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, attn_layer_period=8, attn_layer_offset=4, expert_layer_period=2, expert_layer_offset=1,
        num_experts=16, num_experts_per_tok=2, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=256,
        mamba_conv_bias=True, mamba_proj_bias=False, rms_norm_eps=1e-6, tie_word_embeddings=False)),
    # Qwen/Qwen3-Next-80B-A3B-Instruct config.json (full_attention_interval 4)
    "qwen3_next_80b_a3b": ("Qwen3NextConfig", "Qwen3NextForCausalLM", dict(
        vocab_size=151936, hidden_size=2048, num_hidden_layers=48, full_attention_interval=4, intermediate_size=5120,
        num_attention_heads=16, num_key_value_heads=2, head_dim=256, attention_bias=False, linear_num_key_heads=16,
        linear_num_value_heads=32, linear_key_head_dim=128, linear_value_head_dim=128, linear_conv_kernel_dim=4,
        num_experts=512, num_experts_per_tok=10, moe_intermediate_size=512, shared_expert_intermediate_size=512,
        norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], rms_norm_eps=1e-6,
        tie_word_embeddings=False)),
    # ibm-granite/granite-4.0-h-small config.json
    "granite_4.0_h_small": ("GraniteMoeHybridConfig", "GraniteMoeHybridForCausalLM", dict(
        vocab_size=100352, hidden_size=4096, intermediate_size=768, shared_intermediate_size=1536,
        num_local_experts=72, num_experts_per_tok=10, num_hidden_layers=40, num_attention_heads=32,
        num_key_value_heads=8, layer_types=["attention" if i in GRANITE_SMALL_ATTN else "mamba" for i in range(40)],
        mamba_n_heads=128, mamba_d_head=64, mamba_n_groups=1, mamba_d_state=128, mamba_d_conv=4, mamba_expand=2,
        mamba_conv_bias=True, mamba_proj_bias=False, attention_bias=False, position_embedding_type="nope",
        embedding_multiplier=12.0, residual_multiplier=0.22, rms_norm_eps=1e-5, tie_word_embeddings=True)),
}

# Active parameters as published: name -> (count, source). Checked within 2%, except where the published figure is a
# rounded name that the exact count cannot meet (ROUNDED: the deviation in percent, pinned to one decimal).
PUBLISHED_ACTIVE = {
    # ai21labs/Jamba-v0.1 model card and arXiv 2403.19887 (Table 1): 12B active of 52B
    "jamba_v0.1": (12_000_000_000, "ai21labs/Jamba-v0.1 model card; arXiv 2403.19887"),
    # Qwen/Qwen3-Next-80B-A3B-Instruct model card: "80B in total and 3B activated"
    "qwen3_next_80b_a3b": (3_000_000_000, "Qwen/Qwen3-Next-80B-A3B-Instruct model card"),
    # ibm-granite/granite-4.0-h-small model card: 32B total, 9B active
    "granite_4.0_h_small": (9_000_000_000, "ibm-granite/granite-4.0-h-small model card"),
}
# The exact active count of transformers' own model (test_zoo_active_equals_transformers) is 3,874,929,408 for
# Qwen3-Next (3,252,599,552 without the embedding and the head: no convention reaches 3.0B) and 8,803,121,664 for
# Granite-4.0-H-Small (9.21B with the tied head counted twice): the published "3B" and "9B" are rounded names.
ROUNDED = {"qwen3_next_80b_a3b": +29.2, "granite_4.0_h_small": -2.2}

# Not in transformers: (published count, source). Checked within 0.5%.
PUBLISHED = {
    # microsoft/Samba lit_gpt/config.py "Samba_421M" (the name and the paper's 421M row, arXiv 2406.07522 Table 3)
    "samba_421m": (421_000_000, "microsoft/Samba: Samba_421M; arXiv 2406.07522"),
    # nvidia/Hymba-1.5B-Base model card: 1.52B parameters (arXiv 2411.13676, Table 2: "Hymba 1.5B")
    "hymba_1.5b": (1_520_000_000, "nvidia/Hymba-1.5B-Base model card; arXiv 2411.13676"),
}


def zoo_params(name: str) -> int:
    """hybridc's describe count of examples/zoo/<name>.hyb (raises if the file is missing or does not resolve)."""
    path = ZOO / f"{name}.hyb"
    assert path.is_file(), f"zoo file {path} does not exist yet"
    return hybridc.describe(hybridc.load_file(path))["params"]


def zoo_active(name: str) -> int:
    """describe's active count (the parameters one token uses) of examples/zoo/<name>.hyb."""
    return hybridc.describe(hybridc.load_file(ZOO / f"{name}.hyb"))["active_params"]


def transformers_model(config_cls: str, model_cls: str, values: dict):
    """transformers' model for these config values, built on the meta device (no memory)."""
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    cfg = getattr(tf, config_cls)(**values)
    with torch.device("meta"):
        return getattr(tf, model_cls)(cfg)


def transformers_params(config_cls: str, model_cls: str, values: dict) -> int:
    """Unique parameters of transformers' model for these config values."""
    model = transformers_model(config_cls, model_cls, values)
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


def transformers_active(config_cls: str, model_cls: str, values: dict, top_k: int) -> int:
    """transformers' parameters less the routed experts a token does not use: of every MoE block's stacked experts
    (`experts.gate_up_proj` (E, 2F, D), `experts.down_proj` (E, D, F)), (E - top_k) / E."""
    model = transformers_model(config_cls, model_cls, values)
    total = sum(p.numel() for p in model.parameters())
    unused = sum(p.numel() // p.shape[0] * (p.shape[0] - top_k) for n, p in model.named_parameters()
                 if n.endswith((".experts.gate_up_proj", ".experts.down_proj")))
    return total - unused


@pytest.mark.parametrize("name", sorted(CASES))
def test_zoo_equals_transformers(name):
    config_cls, model_cls, values = CASES[name]
    expected = transformers_params(config_cls, model_cls, values)
    got = zoo_params(name)
    assert got == expected, f"{name}: hybridc {got:,} vs transformers {expected:,} (diff {got - expected:+,})"


@pytest.mark.parametrize("name", sorted(PUBLISHED_ACTIVE))
def test_zoo_active_equals_transformers(name):
    config_cls, model_cls, values = CASES[name]
    expected = transformers_active(config_cls, model_cls, values, values["num_experts_per_tok"])
    got = zoo_active(name)
    assert got == expected, f"{name}: active hybridc {got:,} vs transformers {expected:,} (diff {got - expected:+,})"


@pytest.mark.parametrize("name", sorted(PUBLISHED_ACTIVE))
def test_zoo_active_near_published(name):
    published, source = PUBLISHED_ACTIVE[name]
    got = zoo_active(name)
    deviation = 100 * (got / published - 1)
    if name in ROUNDED:
        assert round(deviation, 1) == ROUNDED[name], f"{name}: active {got:,} vs published {published:,} ({source})"
    else:
        assert abs(deviation) <= 2, f"{name}: active {got:,} vs published {published:,} ({source}): {deviation:+.2f}%"


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_zoo_near_published(name):
    published, source = PUBLISHED[name]
    got = zoo_params(name)
    assert abs(got - published) <= 0.005 * published, (
        f"{name}: hybridc {got:,} vs published {published:,} ({source}): {100 * (got / published - 1):+.2f}%")


def test_every_zoo_file_is_checked():
    """A zoo file without a count test would go unchecked."""
    names = {p.stem for p in ZOO.glob("*.hyb")}
    assert names <= set(CASES) | set(PUBLISHED), f"zoo files without a count test: {sorted(names - set(CASES) - set(PUBLISHED))}"


@pytest.mark.parametrize("name", sorted(p.stem for p in ZOO.glob("*.hyb")))
def test_zoo_round_trips(name):
    """The canonical text of a zoo model reads back to the same model (describe's count included)."""
    m = hybridc.load_file(ZOO / f"{name}.hyb")
    assert hybridc.load(hybridc.dumps(m)) == m
