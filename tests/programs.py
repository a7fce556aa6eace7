"""Small models shared by the backend tests: one per layer kind, per preset, and per feature."""
from hybridc.kinds import NAMES as KINDS  # every registered kind gets a program (the registry is the one list)

SMALL = ("dim 32\nattn heads=2 head_dim=16 window=6\nmamba2 head_dim=16 state=8 chunk=8\nrwkv head_dim=16\n"
         "gated_delta_net heads=2 head_dim=16\ndelta_net heads=2\ngriffin_lru heads=2\nmamba state=4\n")
PRESETS = ["nemotron_h", "jamba", "parallel", "minimal_attn", "hymba", "zamba", "samba", "griffin"]
FEATURES = {
    "mamba2_dt_clamp": "layers mamba2(dt_min=0.05, heads=2) attn mamba2(dt_min=0.01, dt_max=0.06)|attn",
    "mamba2_options": "layers mamba2(heads=3, out_norm=false, proj_bias=true) attn "
                      "mamba2(inner=64, groups=2, norm_before_gate=true, conv_bias=false)|attn",
    "meta": "layers mamba attn rwkv|attn; meta_tokens 3",
    "fusion_mean": "layers gru|attn mamba|attn; fusion mean",
    "hymba_fusion": "layers mamba(inner_norm=weighted)|attn(window=none, rope=true, kv_heads=1) "
                    "mamba|attn(rope=true, kv_heads=1, qk_norm=false) mamba(proj_bias=true)|attn(rope=true, kv_heads=1, "
                    "qk_norm=false, kv_reuse=true); fusion hymba; meta_tokens 2; norm rms eps=1e-5 zero_centered=true",
    "kv_share": "layers attn(rope=true) attn(rope=true, kv_reuse=true) mamba attn(rope=true, kv_reuse=true) "
                "attn(window=none, kv_heads=1) mamba|attn(window=none, kv_heads=1, kv_reuse=true); meta_tokens 2",
    "shared": "layers mamba attn mamba attn; share attn",
    "zamba2_shared": "layers mamba2 attn mamba2 mamba2 attn mamba2 attn mamba2; ffn act=gelu gated=true; "
                     "share attn blocks=2 input=concat lora=4 into=next",
    "shared_lora_residual": "layers attn mamba attn mamba attn; ffn after=none; "
                            "share attn blocks=2 lora=3 lora_on=attn",
    "global_rope_gqa": "layers attn(window=none, rope=true, kv_heads=1) gated_delta_net attn(rope=true)",
    "rms_swiglu": "layers mamba2 attn; norm rms; ffn mult=2 act=swiglu after=all",
    "vocab_logits": "layers griffin_lru attn delta_net; vocab 50; output logits",
    "sequence_in_proj": "layers mamba attn; input 5; output sequence",
    "rwkv_chain": "layers rwkv attn rwkv rwkv",
    "attn_options": "layers attn(rope=true, rope_fraction=0.25, gate=true, qkv_bias=true, softcap=20) mamba2 "
                    "attn(window=none, rope=true, rope_fraction=0.5, o_bias=true, gate=true); meta_tokens 2",
    "ffn_forms": "layers mamba attn mlp(act=relu2, bias=false, hidden=20); ffn act=gelu_tanh gated=true hidden=24",
    "tied_logits": "layers mamba attn; vocab 40; output logits; tie_embeddings true",
    "pad_token": "layers mamba2 attn gated_delta_net; vocab 40; pad_token 3; output logits; tie_embeddings true",
    "mamba_options": "layers mamba(inner=24, proj_bias=true, conv_bias=false, inner_norm=weighted, eps=1e-5) attn "
                     "mamba(inner_norm=plain)|attn",
    "mamba_heads": "layers mamba(heads=2) attn mamba(heads=4, inner_norm=weighted, eps=1e-5, proj_bias=true)|attn",
    "scales_granite": "layers mamba2 attn(scale=0.05) mlp(act=swiglu, gate_scale=0.5, down_scale=2) mamba2|attn; "
                      "vocab 40; output logits; tie_embeddings true; embed_scale 12; residual_scale 0.22; "
                      "logit_scale 0.125; ffn act=swiglu after=all",
    "mup_falcon": "layers mamba2(in_scale=0.6, out_scale=1.4, z_scale=0.5, x_scale=1.5, b_scale=0.7, c_scale=1.3, "
                  "dt_scale=0.8)|attn(in_scale=0.75, out_scale=1.25, key_scale=1.6, rope=true) x2; vocab 40; "
                  "output logits; fusion sum; embed_scale 5; logit_scale 0.3; logit_softcap 4; "
                  "ffn act=swiglu gate_scale=0.4 down_scale=1.7 after=all",
    "gdn_options": "layers gated_delta_net(v_heads=4, v_head_dim=12) attn gated_delta_net(heads=1, v_heads=3, "
                   "neg_eigval=true)",
    "norm_sandwich": "layers mamba2 attn(qk_norm=proj) delta_net gated_delta_net|attn; norm rms eps=1e-5 place=both; "
                     "ffn after=all; fusion mean",
    "norm_post_zero": "layers gated_delta_net attn mamba|attn; norm rms zero_centered=true place=post; fusion mean",
    "norm_layer_zero": "layers mamba2 attn(rope=true); norm layer eps=1e-6 zero_centered=true",
    "qk_norm_proj": "layers attn(qk_norm=proj, rope=true) mamba attn(qk_norm=proj, kv_heads=1, window=none, gate=true); "
                    "norm rms zero_centered=true",
    "fusion_sum": "layers mamba2|attn gru|attn(qk_norm=proj); fusion sum",
    "moe_gated": "layers mamba attn mamba attn; moe every=2 offset=1 experts=4 top_k=2 hidden=24; "
                 "ffn act=swiglu after=all",
    "moe_shared": "layers mamba2 attn mamba|attn attn; ffn act=gelu gated=true hidden=16 after=all experts=4 "
                  "shared_experts=2 shared_gate=true renorm=true; at 2 ffn shared_hidden=20 shared_gate=false top_k=3; "
                  "at 4 ffn experts=0 shared_experts=0 shared_gate=false",
    "moe_sigmoid": "layers mamba attn mlp(experts=4, top_k=3, hidden=12, router=sigmoid, renorm=false); "
                   "ffn after=all experts=3 top_k=1 hidden=20 router=sigmoid renorm=false act=gelu",
    "moe_pattern": 'pattern "M*E-"; moe experts=4 top_k=2 hidden=16 act=swiglu; at 3 moe top_k=1 renorm=false',
}


def programs() -> dict:
    out = {f"kind-{k}": f"layers {k} {k}" + ("" if k == "attn" else " attn") for k in KINDS}
    out.update({f"preset-{p}": f"preset {p}" for p in PRESETS})
    out.update({f"feat-{k}": v for k, v in FEATURES.items()})
    return out


PROGRAMS = programs()


def source(name: str, dropout: float = 0.0, sequence: bool = False) -> str:
    text = PROGRAMS[name]
    if sequence and "output" not in text:
        text += "\noutput sequence"
    return text + "\n" + SMALL + f"dropout {dropout}\n"
