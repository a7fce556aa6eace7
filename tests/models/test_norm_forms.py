"""The model-wide norm settings and QK-norm forms against transformers' own modules, same weights, fp32, 1e-5:
zero-centred norms (Qwen3NextRMSNorm, GemmaRMSNorm, NemotronLayerNorm1P), `qk_norm=proj` (Olmo2Attention), and the
norm placements as whole decoder layers: `place=post` (Olmo2DecoderLayer: post_attention / post_feedforward norms,
QK-norm over the whole projections) and `place=both` (Gemma3DecoderLayer: the sandwich, zero-centred block and
per-head QK norms). Both backends: the torch model and the JAX model with the torch weights."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import hybridc  # noqa: E402
from hybridc_torch.layers._norm import make_norm  # noqa: E402
from hybridc_torch.layers.attn import Attention  # noqa: E402
from hybridc_torch.model import spec  # noqa: E402

D, L = 32, 9


def _perturbed(module, seed=0, scale=0.3):
    """Every parameter moved off its init (zero-centred weights start at 0, which hides the 1 + w)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


def _jax_norm(x, params, kind, eps, zero_centered):
    jnp = pytest.importorskip("jax.numpy")
    from hybridc_jax.layers.common import norm_apply

    p = {k: jnp.asarray(v.detach().numpy()) for k, v in params.items()}
    return np.asarray(norm_apply(p, "n", jnp.asarray(x.numpy()), kind, eps, zero_centered))


@pytest.mark.parametrize("ref_name", ["qwen3_next.Qwen3NextRMSNorm", "gemma.GemmaRMSNorm"])
def test_zero_centred_rms_norm_matches_transformers(ref_name):
    module, cls = ref_name.split(".")
    tf = pytest.importorskip(f"transformers.models.{module}.modeling_{module}")
    ours = _perturbed(make_norm("rms", D, 1e-6, zero_centered=True))
    ref = getattr(tf, cls)(D, eps=1e-6)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, L, D) * 3
    with torch.no_grad():
        want = ref(x)
        torch.testing.assert_close(ours(x), want, atol=1e-5, rtol=1e-5)
    got = _jax_norm(x, {"n.weight": ours.weight}, "rms", 1e-6, True)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=1e-5)


def test_zero_centred_layer_norm_matches_nemotron_layer_norm_1p():
    tf = pytest.importorskip("transformers.models.nemotron.modeling_nemotron")
    ours = _perturbed(make_norm("layer", D, 1e-5, zero_centered=True))
    ref = tf.NemotronLayerNorm1P(D, eps=1e-5)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, L, D) * 3 + 1
    with torch.no_grad():
        want = ref(x)
        torch.testing.assert_close(ours(x), want, atol=1e-5, rtol=1e-5)
    got = _jax_norm(x, {"n.weight": ours.weight, "n.bias": ours.bias}, "layer", 1e-5, True)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=1e-5)


def _olmo2():
    tf = pytest.importorskip("transformers.models.olmo2.modeling_olmo2")
    cfg = tf.Olmo2Config(hidden_size=D, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=1, rms_norm_eps=1e-6, rope_parameters={"rope_type": "default",
                                                                                  "rope_theta": 500.0})
    cfg._attn_implementation = "eager"
    return tf, cfg


def _causal(n):
    return torch.full((n, n), float("-inf")).triu(1)[None, None]


def test_qk_norm_proj_matches_transformers_olmo2_attention():
    """One RMSNorm over the whole q projection (H*E,) and one over k (G*E,), before the split into heads and RoPE;
    torch and JAX layers with the same weights."""
    tf, cfg = _olmo2()
    torch.manual_seed(0)
    s = spec(heads=4, kv_heads=2, head_dim=8, window=None, qk_norm="proj", rope=True, rope_base=500.0,
             rope_fraction=1.0, qkv_bias=False, o_bias=False, gate=False, softcap=None, scale=None, in_scale=1.0,
             key_scale=1.0, out_scale=1.0, kv_reuse=False, norm_eps=1e-6)
    ours = _perturbed(Attention(D, s), scale=0.1)
    assert tuple(ours.q_norm.weight.shape) == (32,) and tuple(ours.k_norm.weight.shape) == (16,)
    ref = tf.Olmo2Attention(cfg, layer_idx=0).eval()
    ref.load_state_dict(ours.state_dict())
    x, pos = torch.randn(2, L, D), torch.arange(L)
    with torch.no_grad():
        want, _ = ref(x, tf.Olmo2RotaryEmbedding(cfg)(x, pos[None]), _causal(L))
        torch.testing.assert_close(ours(x)[0], want, atol=1e-5, rtol=1e-5)
    jnp = pytest.importorskip("jax.numpy")
    from hybridc_jax.layers import attn as jattn

    params = {k: jnp.asarray(v.detach().numpy()) for k, v in ours.state_dict().items()}
    got, _ = jattn.apply(params, jnp.asarray(x.numpy()), s)
    np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=1e-5, rtol=1e-5)


# --- whole decoder layers: hybridc's one-layer model (input = dim, output sequence) against transformers' layer
# followed by the same final norm --------------------------------------------------------------------------------------
OLMO2_TEXT = """dim 32
input 32
output sequence
dropout 0
norm rms eps=1e-6 place=post
attn heads=4 kv_heads=2 head_dim=8 window=none rope=true rope_base=500 qk_norm=proj
ffn act=swiglu hidden=48
layers attn
"""
GEMMA3_TEXT = """dim 32
input 32
output sequence
dropout 0
norm rms eps=1e-6 zero_centered=true place=both
attn heads=4 kv_heads=2 head_dim=8 window=none rope=true rope_base=1000000 qk_norm=head
ffn gated=true act=gelu_tanh hidden=48
layers attn
"""
ATTN = {f"layers.0.mixer.{n}.weight": f"self_attn.{n}.weight" for n in ("q_proj", "k_proj", "v_proj", "o_proj",
                                                                          "q_norm", "k_norm")}
FFN = {"layers.0.ffn.gate.weight": "mlp.gate_proj.weight", "layers.0.ffn.up.weight": "mlp.up_proj.weight",
       "layers.0.ffn.down.weight": "mlp.down_proj.weight"}
POST = {"layers.0.post_norm.weight": "post_attention_layernorm.weight",
        "layers.0.ffn_post_norm.weight": "post_feedforward_layernorm.weight"}
PRE = {"layers.0.norm.weight": "input_layernorm.weight", "layers.0.ffn_norm.weight": "pre_feedforward_layernorm.weight"}


def _olmo2_layer():
    tf, cfg = _olmo2()
    return tf.Olmo2DecoderLayer(cfg, layer_idx=0), tf.Olmo2RMSNorm(D, eps=1e-6), tf.Olmo2RotaryEmbedding(cfg), \
        {**ATTN, **FFN, **POST}


def _gemma3_layer():
    tf = pytest.importorskip("transformers.models.gemma3.modeling_gemma3")
    cfg = tf.Gemma3TextConfig(hidden_size=D, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
                              head_dim=8, query_pre_attn_scalar=8, num_hidden_layers=1, rms_norm_eps=1e-6,
                              layer_types=["full_attention"], hidden_activation="gelu_pytorch_tanh")
    cfg._attn_implementation = "eager"
    assert cfg.rope_parameters["full_attention"]["rope_theta"] == 1e6
    rotary = tf.Gemma3RotaryEmbedding(cfg)
    return tf.Gemma3DecoderLayer(cfg, layer_idx=0), tf.Gemma3RMSNorm(D, eps=1e-6), \
        (lambda x, pos: rotary(x, pos, "full_attention")), {**ATTN, **FFN, **POST, **PRE}


@pytest.mark.parametrize("family", ["olmo2-post-qkproj", "gemma3-both-zero_centered"])
def test_norm_placement_matches_transformers_decoder_layer(family):
    layer, final, rotary, names = (_olmo2_layer if family.startswith("olmo2") else _gemma3_layer)()
    m = hybridc.load(OLMO2_TEXT if family.startswith("olmo2") else GEMMA3_TEXT)
    torch.manual_seed(0)
    net = _perturbed(hybridc.build(m).eval(), scale=0.1)
    sd = net.state_dict()
    assert set(sd) == set(names) | {"norm_f.weight"}          # every weight maps, none is left over
    layer.load_state_dict({theirs: sd[ours] for ours, theirs in names.items()})
    final.load_state_dict({"weight": sd["norm_f.weight"]})
    assert hybridc.describe(m)["params"] == sum(p.numel() for p in layer.parameters()) + D
    x, pos = torch.randn(2, L, D), torch.arange(L)
    with torch.no_grad():
        want = final(layer(x, position_embeddings=rotary(x, pos[None]), attention_mask=_causal(L)))
        torch.testing.assert_close(net(x), want, atol=1e-5, rtol=1e-5)
    jax = pytest.importorskip("jax")
    jn = hybridc.build(m, backend="jax")
    params = {k: jax.numpy.asarray(v.numpy()) for k, v in sd.items()}
    np.testing.assert_allclose(np.asarray(jn.apply(params, x.numpy())), want.numpy(), atol=1e-5, rtol=1e-5)


EMIT_TEXT = """dim 32
input 32
output sequence
dropout 0
norm rms eps=1e-5 zero_centered=true place=both
attn heads=2 head_dim=16 window=none qk_norm=proj
mamba2 head_dim=16 state=8 chunk=8
gated_delta_net heads=2 head_dim=16
layers mamba2|attn gated_delta_net attn(qk_norm=head)
fusion sum
"""


def test_emitted_modules_compute_what_build_does():
    """`hybridc compile` writes the norm settings (the model's, and those its mixers take) and the placement: the
    emitted torch module and JAX module give the built model's outputs with the same (perturbed) weights."""
    from hybridc import registry

    m = hybridc.load(EMIT_TEXT)
    torch.manual_seed(0)
    net = _perturbed(hybridc.build(m).eval(), scale=0.1)
    ns: dict = {}
    exec(compile(registry.get("torch").emit(m), "<emitted torch>", "exec"), ns)
    emitted = ns["Model"]().eval()
    emitted.load_state_dict(net.state_dict())
    x = torch.randn(2, L, D)
    with torch.no_grad():
        want = net(x)
        torch.testing.assert_close(emitted(x), want, atol=1e-6, rtol=1e-6)
    jax = pytest.importorskip("jax")
    ns = {}
    exec(compile(registry.get("jax").emit(m), "<emitted jax>", "exec"), ns)
    params = {k: jax.numpy.asarray(v.numpy()) for k, v in net.state_dict().items()}
    np.testing.assert_allclose(np.asarray(ns["apply"](params, x.numpy())), want.numpy(), atol=1e-5, rtol=1e-5)


OLMO_HYBRID_TEXT = """dim 32
input 32
output sequence
dropout 0
norm rms eps=1e-6
gated_delta_net heads=2 head_dim=8
attn heads=4 kv_heads=2 head_dim=8 window=none rope=true qk_norm=proj
layers gated_delta_net attn mamba2|attn gated_delta_net attn
fusion sum
ffn act=swiglu hidden=48 after=all
at 2,5 norm place=post
at 3 norm place=both
"""


def test_per_layer_placement_builds_emits_and_decodes():
    """`at N norm place=` (OLMo-hybrid: post-norm attention layers among pre-norm gated deltanet layers): the layers'
    own norms (names, count = describe), both backends and the emitted modules agree, decoding equals the forward."""
    from hybridc import registry

    m = hybridc.load(OLMO_HYBRID_TEXT)
    assert [l.norm_place for l in m.layers] == [None, "post", "both", None, "post"]
    torch.manual_seed(0)
    net = _perturbed(hybridc.build(m).eval(), scale=0.1)
    sd = net.state_dict()
    assert sum(v.numel() for v in sd.values()) == hybridc.describe(m)["params"]
    assert {"layers.1.post_norm.weight", "layers.1.ffn_post_norm.weight", "layers.2.norm.weight",
            "layers.2.post_norm.weight", "layers.3.norm.weight"} <= set(sd)
    assert not {"layers.1.norm.weight", "layers.1.ffn_norm.weight", "layers.0.post_norm.weight"} & set(sd)
    x = torch.randn(2, L, D)
    with torch.no_grad():
        want = net(x)
        state, steps = net.init_state(2), []
        for t in range(L):
            y, state = net.step(x[:, t], state)
            steps.append(y)
        torch.testing.assert_close(torch.stack(steps, 1), want, atol=1e-5, rtol=1e-5)
        ns: dict = {}
        exec(compile(registry.get("torch").emit(m), "<emitted torch>", "exec"), ns)
        emitted = ns["Model"]().eval()
        emitted.load_state_dict(sd)
        torch.testing.assert_close(emitted(x), want, atol=1e-6, rtol=1e-6)
    jax = pytest.importorskip("jax")
    params = {k: jax.numpy.asarray(v.numpy()) for k, v in sd.items()}
    jn = hybridc.build(m, backend="jax")
    assert set(jax.eval_shape(jn.init, jax.random.PRNGKey(0))) == set(sd)
    np.testing.assert_allclose(np.asarray(jn.apply(params, x.numpy())), want.numpy(), atol=1e-5, rtol=1e-5)
    ns = {}
    exec(compile(registry.get("jax").emit(m), "<emitted jax>", "exec"), ns)
    np.testing.assert_allclose(np.asarray(ns["apply"](params, x.numpy())), want.numpy(), atol=1e-5, rtol=1e-5)


def test_olmo_hybrid_mixed_layout_whole_model(monkeypatch):
    """OlmoHybridForCausalLM's published mixed layout: pre-norm Gated DeltaNet layers and post-norm attention layers
    (`at 4 norm place=post`), logits to 1e-5 in torch (decoding too) and the same parameter count. rms_norm_eps 1e-5,
    the eps OLMo-hybrid fixes for its deltanet output norm, so the model-wide `norm eps=1e-5` is every norm's eps there.
    Names as tests/models/test_hf_olmo_hybrid.py, the norms by placement: pre-norm layers `input_layernorm -> norm`,
    `post_attention_layernorm -> ffn_norm`; the post-norm layer `post_attention_layernorm -> post_norm`,
    `post_feedforward_layernorm -> ffn_post_norm`."""
    import re

    oh = pytest.importorskip("transformers.models.olmo_hybrid.modeling_olmo_hybrid")
    from _hf_whole import check_whole, rules

    monkeypatch.setattr(oh, "torch_chunk_gated_delta_rule", oh.torch_chunk_gated_delta_rule.__wrapped__)
    d, v, heads, k, vd = 64, 100, 2, 16, 32
    cfg = oh.OlmoHybridConfig(vocab_size=v, pad_token_id=0, hidden_size=d, num_hidden_layers=4,
                              layer_types=["linear_attention"] * 3 + ["full_attention"], num_attention_heads=4,
                              num_key_value_heads=4, intermediate_size=96, linear_num_key_heads=heads,
                              linear_num_value_heads=heads, linear_key_head_dim=k, linear_value_head_dim=vd,
                              linear_conv_kernel_dim=4, linear_allow_neg_eigval=True, rms_norm_eps=1e-5,
                              rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                              tie_word_embeddings=False, use_cache=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = oh.OlmoHybridForCausalLM(cfg)
    layer = r"model\.layers\.(\d+)\."

    def convs(src) -> dict:  # one conv over [q, k, v] channels -> q_conv1d, k_conv1d, v_conv1d
        out = {}
        for name in list(src.keys()):
            m = re.fullmatch(layer + r"linear_attn\.conv1d\.weight", name)
            if m is not None:
                for n, t in zip("qkv", src[name].split([heads * k, heads * k, heads * vd], dim=0)):
                    out[f"layers.{m[1]}.mixer.{n}_conv1d.weight"] = t
        return out

    convert = rules(
        (r"model\.embed_tokens\.weight", "embed.weight"), (r"model\.norm\.weight", "norm_f.weight"),
        (r"lm_head\.weight", "lm_head.weight"),
        (r"model\.layers\.(3)\.post_attention_layernorm\.weight", r"layers.\1.post_norm.weight"),
        (r"model\.layers\.(3)\.post_feedforward_layernorm\.weight", r"layers.\1.ffn_post_norm.weight"),
        (layer + r"input_layernorm\.weight", r"layers.\1.norm.weight"),
        (layer + r"post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
        (layer + r"mlp\.(gate|up|down)_proj\.weight", r"layers.\1.ffn.\2.weight"),
        (layer + r"(?:linear_attn|self_attn)\.(.+)", r"layers.\1.mixer.\2"),
        extra=convs)
    program = (f"dim {d}; vocab {v}; output logits; dropout 0; norm rms eps=1e-5\n"
               f"ffn after=all act=silu gated=true bias=false hidden=96\n"
               f"gated_delta_net heads={heads} head_dim={k} v_head_dim={vd} conv=4 neg_eigval=true\n"
               f"attn heads=4 kv_heads=4 head_dim=16 rope=true qk_norm=proj window=none\n"
               f"layers gated_delta_net x3 attn\nat 4 norm place=post\n")
    out = check_whole(hf, program, convert, vocab=v)
    assert out["params"] == sum(p.numel() for p in hf.parameters())
