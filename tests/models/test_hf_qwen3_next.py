"""Whole-model check: transformers' Qwen3NextForCausalLM (dense: num_experts=0, every layer an MLP layer) == hybridc
`layers gated_delta_net attn` at a tiny size.

Layer kinds: Gated DeltaNet with value heads (2 key heads, 4 value heads, K = V = 16) and gated attention (q_proj
gives per head [q, gate], partial RoPE 0.25, per-head q/k RMSNorm), each followed by the SwiGLU FFN. Norms are
zero-centred, `(1 + w)` (Qwen3NextRMSNorm: block norms, final norm, q/k norms), at eps 1e-6, except the deltanet's
gated output norm (Qwen3NextRMSNormGated: plain `w`), which hybridc keeps plain too: every weight maps unchanged.

Mapping: `model.embed_tokens` -> `embed`; per layer `input_layernorm` -> `norm`, `post_attention_layernorm` ->
`ffn_norm`, `mlp.{gate,up,down}_proj` -> `ffn.{gate,up,down}`, `self_attn.*` -> `mixer.*`; `model.norm` -> `norm_f`.
The deltanet's fused weights are sliced (`linear_attn_to_ours`): per key head h, the rows of `in_proj_qkvz` are
`[q_h (K), k_h (K), v (r V), z (r V)]` with r = value heads per key head (z is our `g_proj`), those of `in_proj_ba`
`[b (r), a (r)]`; `conv1d` channels are `[q (H K), k (H K), v (Hv V)]` (our three convs); `norm` -> `o_norm`,
`out_proj` -> `o_proj`, `A_log`, `dt_bias` unchanged.
"""
import re

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")
qn = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")

from _hf_whole import check_whole, report, rules  # noqa: E402

D, V, HIDDEN, EPS = 64, 100, 96, 1e-6
H, HV, K, VD = 2, 4, 16, 16


def linear_attn_to_ours(src) -> dict:
    out = {}
    for name in list(src.keys()):
        m = re.fullmatch(r"model\.layers\.(\d+)\.linear_attn\.in_proj_qkvz\.weight", name)
        if m is None:
            continue
        pre, ours, r = f"model.layers.{m[1]}.linear_attn.", f"layers.{m[1]}.mixer.", HV // H
        q, k, v, z = src[name].unflatten(0, (H, 2 * K + 2 * r * VD)).split([K, K, r * VD, r * VD], dim=1)
        b, a = src[pre + "in_proj_ba.weight"].unflatten(0, (H, 2 * r)).split([r, r], dim=1)
        cq, ck, cv = src[pre + "conv1d.weight"].split([H * K, H * K, HV * VD], dim=0)
        out.update({ours + f"{n}_proj.weight": t.flatten(0, 1) for n, t in dict(q=q, k=k, v=v, g=z, a=a, b=b).items()})
        out.update({ours + "q_conv1d.weight": cq, ours + "k_conv1d.weight": ck, ours + "v_conv1d.weight": cv})
        out.update({ours + n: src[pre + t] for n, t in (("o_norm.weight", "norm.weight"), ("A_log", "A_log"),
                    ("o_proj.weight", "out_proj.weight"), ("dt_bias", "dt_bias"))})
    return out


MAPPING = rules(
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.norm\.weight", "norm_f.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"layers.\1.norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
    (r"model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", r"layers.\1.ffn.\2.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.(.+)", r"layers.\1.mixer.\2"),
    extra=linear_attn_to_ours,
)


def test_qwen3_next_for_causal_lm(tmp_path, monkeypatch):
    # with fla installed transformers would call its Triton kernel (no CPU driver): use the wrapped torch function
    monkeypatch.setattr(qn, "torch_chunk_gated_delta_rule", qn.torch_chunk_gated_delta_rule.__wrapped__)
    cfg = tf.Qwen3NextConfig(vocab_size=V, hidden_size=D, num_hidden_layers=2,
                             layer_types=["linear_attention", "full_attention"], num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, intermediate_size=HIDDEN, linear_num_key_heads=H,
                             linear_num_value_heads=HV, linear_key_head_dim=K, linear_value_head_dim=VD,
                             linear_conv_kernel_dim=4, num_experts=0, mlp_only_layers=[0, 1], rms_norm_eps=EPS,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "partial_rotary_factor": 0.25},
                             attention_bias=False, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)  # transformers' init, then the harness's seeded noise
    hf = qn.Qwen3NextForCausalLM(cfg)
    program = (f"layers gated_delta_net attn; dim {D}; vocab {V}; output logits; "
               f"norm rms eps={EPS} zero_centered=true; dropout 0; "
               f"ffn after=all act=silu gated=true bias=false hidden={HIDDEN}; "
               f"gated_delta_net heads={H} v_heads={HV} head_dim={K} v_head_dim={VD} conv=4 gate=true; "
               f"attn heads=4 kv_heads=2 head_dim=16 rope=true rope_fraction=0.25 gate=true qk_norm=head window=none")
    report("qwen3_next", check_whole(hf, program, MAPPING, vocab=V, jax=True, tmp_path=tmp_path))
