"""Whole-model checks of the scalar multipliers against transformers at a tiny size (the `_hf_whole` harness).

Granite-4.0-H (GraniteMoeHybridForCausalLM, dense: num_local_experts=0, the shared MLP only): `embed_scale`
(embedding_multiplier), `residual_scale` (residual_multiplier: each sub-block's output is scaled before the add),
`logit_scale` (1 / logits_scaling), attn `scale` (attention_multiplier, the score scale), tied embeddings.
Mapping: `model.embed_tokens` -> `embed`; per layer `input_layernorm` -> `norm`, `mamba.*` / `self_attn.*` ->
`mixer.*`, `post_attention_layernorm` -> `ffn_norm`, `shared_mlp.input_linear` (2F, D) split in half -> `ffn.gate`
(first F rows) and `ffn.up`, `shared_mlp.output_linear` -> `ffn.down`; `model.norm` -> `norm_f`.

Falcon-H1 (FalconH1ForCausalLM): every layer a parallel block `mamba2|attn` with `fusion sum` and the muP
multipliers: embedding_multiplier -> `embed_scale`, lm_head_multiplier -> `logit_scale`, attention_in/out_multiplier
and key_multiplier -> attn `in_scale out_scale key_scale`, ssm_in/out_multiplier -> mamba2 `in_scale out_scale`,
ssm_multipliers (z, x, B, C, dt) -> mamba2 `z_scale x_scale b_scale c_scale dt_scale`, mlp_multipliers (gate, down)
-> ffn `gate_scale down_scale`; here module by module (the whole model: tests/hf/test_hf_falcon_h1.py).

RecurrentGemma: the embedding normalizer and the final logit soft-cap, by unit (the whole model is another test's).
"""
import math

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import hybridc  # noqa: E402
from _hf_whole import check_whole, report, rules, set_eps  # noqa: E402

D, V, N, P, HIDDEN = 64, 100, 16, 16, 96
BLOCK_EPS = 1e-6  # hybridc's block RMSNorm eps today; the mixers' gated norm keeps 1e-5


def _split_input_linear(src):
    """Granite's fused [gate; up] (2F, D) -> our ffn.gate, ffn.up (F, D) each."""
    out = {}
    for name, w in src.take(r"model\.layers\.(\d+)\.shared_mlp\.input_linear\.weight").items():
        i = name.split(".")[2]
        out[f"layers.{i}.ffn.gate.weight"], out[f"layers.{i}.ffn.up.weight"] = w.chunk(2, dim=0)
    return out


GRANITE_MAPPING = rules(
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.norm\.weight", "norm_f.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"layers.\1.norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
    (r"model\.layers\.(\d+)\.shared_mlp\.output_linear\.weight", r"layers.\1.ffn.down.weight"),
    (r"model\.layers\.(\d+)\.(?:mamba|self_attn)\.(.+)", r"layers.\1.mixer.\2"),
    extra=_split_input_linear,
)

GRANITE = dict(embedding_multiplier=12.0, residual_multiplier=0.22, logits_scaling=8.0, attention_multiplier=0.015625)


def test_granite_4_h_dense(tmp_path):
    cfg = tf.GraniteMoeHybridConfig(
        vocab_size=V, hidden_size=D, num_hidden_layers=4,
        layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"],
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=0, shared_intermediate_size=HIDDEN,
        mamba_n_heads=2 * D // P, mamba_d_head=P, mamba_n_groups=2, mamba_d_state=N, mamba_d_conv=4, mamba_expand=2,
        position_embedding_type=None, rms_norm_eps=BLOCK_EPS, tie_word_embeddings=True, **GRANITE)
    cfg._attn_implementation = "eager"
    hf = tf.GraniteMoeHybridForCausalLM(cfg)
    assert hf.model.layers[0].block_sparse_moe is None and hf.model.layers[1].self_attn.head_dim == 16
    set_eps([blk.mamba.norm for blk in hf.model.layers if blk.mamba is not None], 1e-5)
    program = (f"layers mamba2 attn mamba2 attn; dim {D}; vocab {V}; output logits; tie_embeddings true; norm rms; "
               f"dropout 0; embed_scale 12; residual_scale 0.22; logit_scale 0.125; "
               f"ffn after=all act=swiglu hidden={HIDDEN}; "
               f"mamba2 state={N} expand=2 conv=4 head_dim={P} groups=2; "
               f"attn heads=4 kv_heads=2 head_dim=16 rope=false qk_norm=false window=none scale=0.015625")
    report("granite_4_h_scaled", check_whole(hf, program, GRANITE_MAPPING, vocab=V, jax=True, tmp_path=tmp_path))


def test_recurrentgemma_embed_scale_and_softcap():
    """transformers' RecurrentGemma multiplies the embeddings by a bfloat16 normalizer: sqrt(dim) rounded to bf16, so
    RecurrentGemma-2B (dim 2560) is written `embed_scale 50.5`, not 50.596; its logits are soft-capped,
    c * tanh(logits / c) (`logit_softcap 30`). Checked on transformers' own forward: the stream entering layer 0 and the
    final logits from the raw head output, with our embedding weights copied from theirs."""
    assert float(torch.tensor(2560 ** 0.5, dtype=torch.bfloat16)) == 50.5 != math.sqrt(2560)
    dim, cap = 48, 7.0
    cfg = tf.RecurrentGemmaConfig(vocab_size=V, hidden_size=dim, num_hidden_layers=1, block_types=["recurrent"],
                                  intermediate_size=96, num_attention_heads=2, logits_soft_cap=cap)
    hf = tf.RecurrentGemmaForCausalLM(cfg).float().eval()
    scale = float(hf.model.normalizer)
    assert scale == 6.9375 != math.sqrt(dim)
    seen = {}
    hf.model.layers[0].register_forward_pre_hook(lambda m, args: seen.__setitem__("stream", args[0]))
    hf.lm_head.register_forward_hook(lambda m, args, out: seen.__setitem__("raw", out))
    ours = hybridc.build(hybridc.load(f"layers attn; dim {dim}; vocab {V}; output logits; dropout 0; "
                                      f"embed_scale {scale}; logit_softcap {cap}"), backend="torch").eval()
    x = torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours.embed.weight.copy_(hf.model.embed_tokens.weight)
        want = hf(input_ids=x, use_cache=False).logits
        torch.testing.assert_close(ours._embed(x), seen["stream"], rtol=0, atol=0)
        torch.testing.assert_close(ours._logits(seen["raw"] * 40), torch.tanh(seen["raw"] * 40 / cap) * cap)
        torch.testing.assert_close(ours._logits(seen["raw"]), want, rtol=1e-6, atol=1e-6)


# --- Falcon-H1's muP multipliers, module by module (transformers' FalconH1Mixer / FalconH1Attention / FalconH1MLP) ---
MUP = dict(ssm_in_multiplier=0.6, ssm_out_multiplier=1.4, ssm_multipliers=[0.5, 1.5, 0.7, 1.3, 0.8],
           attention_in_multiplier=0.75, attention_out_multiplier=1.25, key_multiplier=1.6, mlp_multipliers=[0.4, 1.7],
           embedding_multiplier=5.0, lm_head_multiplier=0.3)
MAMBA2_MUP = ("in_scale=0.6 out_scale=1.4 z_scale=0.5 x_scale=1.5 b_scale=0.7 c_scale=1.3 dt_scale=0.8")
ATTN_MUP = "in_scale=0.75 out_scale=1.25 key_scale=1.6"
FFN_MUP = "gate_scale=0.4 down_scale=1.7"


def _falcon(**kw):
    falcon = pytest.importorskip("transformers.models.falcon_h1.modeling_falcon_h1")
    base = dict(vocab_size=V, hidden_size=D, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=16, intermediate_size=HIDDEN, mamba_d_ssm=96, mamba_n_heads=6, mamba_d_head=16,
                mamba_n_groups=2, mamba_d_state=N, mamba_d_conv=4, mamba_chunk_size=8, mamba_rms_norm=False,
                rms_norm_eps=BLOCK_EPS, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                tie_word_embeddings=False, **MUP)
    cfg = tf.FalconH1Config(**(base | kw))
    cfg._attn_implementation = "eager"
    return falcon, cfg


def _layer(kind: str, program: str):
    """Our torch layer of `kind` (the first one of a one-block model) from written options."""
    m = hybridc.load(f"dim {D}; dropout 0; layers {kind}; {program}")
    return hybridc.build(m, backend="torch").eval().layers[0], m


def _x(length=7):
    return torch.randn(2, length, D, generator=torch.Generator().manual_seed(1))


def test_falcon_h1_mixer_mup():
    """mamba2 in_scale, z/x/b/c/dt_scale and out_scale == FalconH1Mixer's ssm_in_multiplier, mup_vector (ssm_multipliers
    over [z, x, B, C, dt]) and the decoder layer's ssm_out_multiplier."""
    falcon, cfg = _falcon()
    hf = falcon.FalconH1Mixer(cfg, 0).eval()
    hf.mup_vector = falcon.compute_mup_vector(cfg)
    blk, _ = _layer("mamba2", f"mamba2 inner=96 heads=6 head_dim=16 groups=2 state={N} conv=4 chunk=8 out_norm=false "
                              f"{MAMBA2_MUP}")
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        blk.mixer.load_state_dict(hf.state_dict())
        want = hf(_x()) * cfg.ssm_out_multiplier
        got, _ = blk.mixer(_x())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_falcon_h1_attention_and_mlp_mup():
    """attn in_scale / key_scale / out_scale == FalconH1DecoderLayer's attention_in/out_multiplier around
    FalconH1Attention (key_multiplier inside); ffn gate_scale / down_scale == FalconH1MLP's mlp_multipliers."""
    falcon, cfg = _falcon()
    attn, mlp = falcon.FalconH1Attention(cfg, 0).eval(), falcon.FalconH1MLP(cfg).eval()
    rope = falcon.FalconH1RotaryEmbedding(config=cfg)
    blk, _ = _layer("attn", f"attn heads=4 kv_heads=2 head_dim=16 rope=true qk_norm=false window=none {ATTN_MUP}; "
                            f"ffn act=swiglu hidden={HIDDEN} {FFN_MUP}")
    x = _x()
    with torch.no_grad():
        for mod in (attn, mlp):
            for p in mod.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        blk.mixer.load_state_dict(attn.state_dict())
        blk.ffn.load_state_dict({f"{n.removesuffix('_proj.weight')}.weight": t for n, t in mlp.state_dict().items()})
        pos = torch.arange(x.shape[1])[None]
        mask = torch.full((x.shape[1],) * 2, float("-inf")).triu(1)[None, None]
        want, _ = attn(x * cfg.attention_in_multiplier, rope(x, pos), mask)
        torch.testing.assert_close(blk.mixer(x)[0], want * cfg.attention_out_multiplier, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(blk.ffn(x)[0], mlp(x), rtol=1e-5, atol=1e-5)
