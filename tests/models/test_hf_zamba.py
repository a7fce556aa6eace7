"""Whole-model check: transformers' ZambaForCausalLM (Zamba-1, tied head) == hybridc with one shared attention
block (`share attn input=concat into=next`) and 2-head Mamba-1 (`mamba heads=2`) at a tiny size: 6 Zamba layers,
attention period 2 offset 1 (hybrid layers 2 and 4: two call sites of the one shared block).

Layout: a Zamba hybrid layer j is two hybridc layers, the shared `attn` site then the `mamba` layer its output enters
(ZambaHybridLayer: shared_transf on concat(hidden, embeddings) -> linear -> mamba_decoder, which adds it to its input
before its norm). The shared block's attention works at width 2D (head_dim 2D / heads) with scale
(head_dim / 2) ** -0.5 (ZambaAttention's), no positional encoding; its FFN is the gated GELU MLP, no residuals.

Mapping (transformers -> hybridc), p(j) the hybridc position of transformers' layer j's mamba, s(j) = p(j) - 1:
- model.embed_tokens -> embed (the tied head comes with it); model.final_layernorm -> norm_f;
- model.layers.j.{mamba, mamba_decoder.mamba}.* -> layers.p(j).mixer.* (per-head x_proj_weight, dt_proj_weight,
  dt_proj_bias, A_log, D have the same names and shapes); their input_layernorm -> layers.p(j).norm;
- model.layers.j.linear -> layers.s(j).linear;
- model.layers.j.shared_transf (tied: transformers lists it once, at the first hybrid layer): input_layernorm ->
  layers.s(j).norm, self_attn.* -> layers.s(j).mixer.*, pre_ff_layernorm -> layers.s(j).ffn_norm,
  feed_forward.{gate,up,down}_proj -> layers.s(j).ffn.{gate,up,down}.
"""
import re

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, report  # noqa: E402

D, V, HEADS, N, F, EPS = 64, 100, 4, 16, 96, 1e-5


def positions(types):
    """transformers' layer j -> hybridc position of its mamba layer (a hybrid layer's site sits just before it)."""
    out, p = {}, 0
    for j, t in enumerate(types):
        p += t == "hybrid"
        out[j] = p
        p += 1
    return out


def convert(types):
    pos = positions(types)

    def run(src) -> dict:
        out = {"embed.weight": src["model.embed_tokens.weight"], "norm_f.weight": src["model.final_layernorm.weight"]}
        for name in list(src.keys()):
            m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
            if m is None:
                continue
            p, rest = pos[int(m[1])], m[2]
            s, t = p - 1, src[name]
            if mm := re.fullmatch(r"(?:mamba_decoder\.)?mamba\.(.+)", rest):
                out[f"layers.{p}.mixer.{mm[1]}"] = t
            elif re.fullmatch(r"(?:mamba_decoder\.)?input_layernorm\.weight", rest):
                out[f"layers.{p}.norm.weight"] = t
            elif rest == "linear.weight":
                out[f"layers.{s}.linear.weight"] = t
            elif mm := re.fullmatch(r"shared_transf\.(.+)", rest):
                shared = re.sub(r"^self_attn\.", "mixer.", mm[1])
                shared = re.sub(r"^feed_forward\.(gate|up|down)_proj\.", r"ffn.\1.", shared)
                shared = {"input_layernorm.weight": "norm.weight",
                          "pre_ff_layernorm.weight": "ffn_norm.weight"}.get(shared, shared)
                out[f"layers.{s}.{shared}"] = t
        return out

    return run


def test_zamba_for_causal_lm(tmp_path):
    cfg = tf.ZambaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=6, attn_layer_period=2, attn_layer_offset=1,
                         n_mamba_heads=2, mamba_d_state=N, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=4,
                         num_attention_heads=HEADS, num_key_value_heads=HEADS, intermediate_size=F,
                         hidden_act="gelu", rms_norm_eps=EPS, tie_word_embeddings=True)
    cfg._attn_implementation = "eager"
    types = cfg.layers_block_type
    assert types == ["linear_attention", "linear_attention", "hybrid", "linear_attention", "hybrid",
                     "linear_attention"]
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = tf.ZambaForCausalLM(cfg)
    head_dim = 2 * D // HEADS
    layers = " ".join("attn mamba" if t == "hybrid" else "mamba" for t in types)
    program = (f"dim {D}; vocab {V}; output logits; tie_embeddings true; norm rms eps={EPS}; dropout 0\n"
               f"mamba state={N} expand=2 conv=4 dt_rank=4 heads=2\n"
               f"attn heads={HEADS} head_dim={head_dim} window=none qk_norm=none rope=false "
               f"scale={(head_dim / 2) ** -0.5}\n"
               f"ffn act=gelu gated=true bias=false hidden={F}\n"
               f"layers {layers}\n"
               f"share attn input=concat into=next\n")
    report("zamba", check_whole(hf, program, convert(types), vocab=V, jax=True, tmp_path=tmp_path))
