"""Qwen3-Next through `import-hf`: Gated DeltaNet (2 key heads, 4 value heads) and gated attention (partial RoPE,
per-head zero-centred QK-norm) layers, the sparse MoE with its sigmoid-gated shared expert and a dense MLP layer
(`mlp_only_layers`), a padding token, a sharded checkpoint (tests/hf/_harness.py)."""
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")
qn = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")

import hybridc  # noqa: E402
from hybridc.hf import export_family  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from _harness import check_family  # noqa: E402

D, V = 64, 100
ZOO = Path(__file__).resolve().parents[2] / "examples" / "zoo"


@pytest.fixture
def torch_kernels(monkeypatch):
    """With fla installed transformers would call its Triton kernels (no CPU driver): use the wrapped torch ones."""
    for name in ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule", "causal_conv1d_fn",
                 "causal_conv1d_update"):
        monkeypatch.setattr(qn, name, getattr(qn, name).__wrapped__)


def config(**kw):
    base = dict(vocab_size=V, hidden_size=D, num_hidden_layers=2, layer_types=["linear_attention", "full_attention"],
                num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, intermediate_size=96, linear_num_key_heads=2,
                linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16, linear_conv_kernel_dim=4,
                num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                norm_topk_prob=True, mlp_only_layers=[1], rms_norm_eps=1e-6, attention_bias=False,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
                tie_word_embeddings=False, pad_token_id=0)
    return tf.Qwen3NextConfig(**(base | kw))


def test_qwen3_next(tmp_path, torch_kernels):
    cfg = config()
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = qn.Qwen3NextForCausalLM(cfg)
    assert [type(b.mlp).__name__ for b in hf.model.layers] == ["Qwen3NextSparseMoeBlock", "Qwen3NextMLP"]
    check_family(hf, tmp_path, vocab=V, shard=True,
                 expect_in_text=("layers gated_delta_net attn\n", "pad_token 0", "v_heads=4",
                                 "shared_gate=true", "zero_centered=true", "rope_fraction=0.25"))


@pytest.mark.parametrize("field, value, words", [
    ("hidden_act", "gelu", "short convolution"),
    ("rope_parameters", {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0}, "yarn"),
    ("layer_types", ["linear_attention", "sliding_attention"], "full_attention"),
    ("attention_dropout", 0.1, "dropout"),
])
def test_qwen3_next_refuses(tmp_path, field, value, words):
    data = config().to_dict() | {field: value, "architectures": ["Qwen3NextForCausalLM"]}
    (tmp_path / "config.json").write_text(json.dumps(data, indent=2))
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.import_hf(tmp_path / "config.json")
    assert field in str(e.value) and words in str(e.value)


def test_qwen3_next_dense_tied_interval(tmp_path, torch_kernels):
    """No experts (every layer an MLP), tied embeddings, the older `full_attention_interval` spelling: the structure
    (parameter count), export's config, and a checkpoint holding the multi-token-prediction head (`mtp.*`, which
    transformers does not load either) loads with the same logits."""
    data = config(num_experts=0, tie_word_embeddings=True, num_hidden_layers=4, layer_types=None).to_dict()
    data.pop("layer_types")
    data |= {"full_attention_interval": 2, "architectures": ["Qwen3NextForCausalLM"]}
    (tmp_path / "config.json").write_text(json.dumps(data, indent=2))
    text = hybridc.import_hf(tmp_path / "config.json")
    assert "layers (gated_delta_net attn) x2" in text
    assert "experts" not in text and "tie_embeddings true" in text
    m = hybridc.load(text)
    torch.manual_seed(0)
    hf = qn.Qwen3NextForCausalLM(tf.Qwen3NextConfig.from_dict(data))
    assert hybridc.describe(m)["params"] == sum(p.numel() for p in hf.parameters())
    _, back = export_family(m)
    assert back["num_experts"] == 0 and back["tie_word_embeddings"] and back["layer_types"][1] == "full_attention"

    hf.save_pretrained(tmp_path / "ck")
    tensors = load_file(tmp_path / "ck" / "model.safetensors")
    save_file(tensors | {"mtp.fc.weight": torch.ones(D, 2 * D)}, tmp_path / "ck" / "model.safetensors",
              metadata={"format": "pt"})
    ours = hybridc.load_hf_weights(hybridc.build(m, backend="torch"), tmp_path / "ck").eval()
    x = torch.randint(0, V, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf.eval()(input_ids=x).logits, rtol=1e-5, atol=1e-5)


def test_qwen3_next_80b_config(tmp_path):
    """Qwen3-Next-80B-A3B's published config.json (older spellings: rope_theta, partial_rotary_factor and
    full_attention_interval at the top level) imports to the zoo file's model: 79,674,391,296 parameters (transformers'
    count, tests/zoo), the same active count."""
    data = {"architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "vocab_size": 151936,
            "hidden_size": 2048, "num_hidden_layers": 48, "full_attention_interval": 4, "intermediate_size": 5120,
            "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256, "attention_bias": False,
            "attention_dropout": 0.0, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
            "linear_key_head_dim": 128, "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "num_experts": 512,
            "num_experts_per_tok": 10, "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
            "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [], "rms_norm_eps": 1e-6,
            "hidden_act": "silu", "rope_theta": 10000000, "partial_rotary_factor": 0.25, "rope_scaling": None,
            "max_position_embeddings": 262144, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "use_cache": True, "bos_token_id": 151643, "eos_token_id": 151645, "initializer_range": 0.02,
            "output_router_logits": False, "router_aux_loss_coef": 0.001}
    (tmp_path / "config.json").write_text(json.dumps(data, indent=2))
    ours = hybridc.describe(hybridc.load_hf(tmp_path / "config.json"))
    zoo = hybridc.describe(hybridc.load(open(ZOO / "qwen3_next_80b_a3b.hyb").read()))
    assert ours["params"] == zoo["params"] == 79_674_391_296 and ours["active_params"] == zoo["active_params"]


def test_qwen3_next_export_refuses():
    """Export names the part Qwen3-Next has no equivalent for."""
    m = hybridc.load("dim 64; vocab 100; output logits; norm rms eps=1e-6 zero_centered=true; dropout 0; "
                     "ffn after=all act=silu gated=true bias=false hidden=96; gated_delta_net heads=2 head_dim=16; "
                     "attn heads=4 head_dim=16 rope=true gate=true window=32; layers gated_delta_net attn")
    with pytest.raises(hybridc.HybridcError, match="qwen3_next: attn: .*global"):
        export_family(m, "qwen3_next")
