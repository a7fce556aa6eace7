"""Whole-model check: transformers' Zamba2ForCausalLM == hybridc's shared blocks (`share attn blocks=2 input=concat
lora=R into=next`) at a tiny size: dim 64, 6 Zamba2 layers of which 3 hybrid (so block 0 serves sites 0 and 2),
2 memory blocks, adapters on q/k/v and gate_up, RoPE in the shared attention; tied embeddings.

Layout: a Zamba2 hybrid layer j is two hybridc layers, the shared `attn` site then the `mamba2` layer its output
enters (Zamba2HybridLayer: shared_transformer -> linear -> mamba_decoder). Mapping (transformers -> hybridc), with
p(j) the hybridc position of transformers' layer j's mamba and s(j) = p(j) - 1 its site:
- model.embed_tokens -> embed (the tied head comes with it); model.final_layernorm -> norm_f;
- model.layers.j.{mamba, mamba_decoder.mamba}.* -> layers.p(j).mixer.*; their input_layernorm -> layers.p(j).norm;
- model.layers.j.linear -> layers.s(j).linear;
- model.layers.j.shared_transformer (block b's first site j): input_layernorm -> layers.s(j).norm,
  self_attn.{q,k,v,o}_proj -> layers.s(j).mixer.{q,k,v,o}_proj, pre_ff_layernorm -> layers.s(j).ffn_norm,
  feed_forward.gate_up_proj (2F, D) -> layers.s(j).ffn.gate (first F rows) and ffn.up (last F rows),
  feed_forward.down_proj -> layers.s(j).ffn.down;
- adapters of call site i (transformers' adapter list index i, held by block i mod 2):
  self_attn.linear_{q,k,v}_adapter_list.i.{0,1} -> layers.s_i.lora.{q,k,v}_proj.{a,b},
  feed_forward.gate_up_proj_adapter_list.i.{0,1} -> layers.s_i.lora.ffn.{a,b}.

Zamba2 clamps dt at time_step_min: `mamba2 dt_min=` (0.05 here, so that it acts on many dt).
"""
import re

import pytest

pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from _hf_whole import check_whole, report  # noqa: E402

D, V, HEADS, N, F, R = 64, 100, 4, 16, 96, 8
TYPES = ["mamba", "hybrid", "mamba", "hybrid", "hybrid", "mamba"]
EPS = 1e-5  # Zamba2's rms_norm_eps (its mixer's gated norm is fixed at 1e-5 too): `norm rms eps=1e-5`


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
    sites = [pos[j] - 1 for j, t in enumerate(types) if t == "hybrid"]

    def run(src) -> dict:
        out = {"embed.weight": src["model.embed_tokens.weight"], "norm_f.weight": src["model.final_layernorm.weight"]}
        for name in list(src.keys()):
            m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
            if m is None:
                continue
            j, rest = int(m[1]), m[2]
            p, s = pos[j], pos[j] - 1
            t = src[name]
            if mm := re.fullmatch(r"(?:mamba_decoder\.)?mamba\.(.+)", rest):
                out[f"layers.{p}.mixer.{mm[1]}"] = t
            elif re.fullmatch(r"(?:mamba_decoder\.)?input_layernorm\.weight", rest):
                out[f"layers.{p}.norm.weight"] = t
            elif rest == "linear.weight":
                out[f"layers.{s}.linear.weight"] = t
            elif mm := re.fullmatch(r"shared_transformer\.(.+)", rest):
                out.update(shared(mm[1], t, s, sites))
            else:
                raise KeyError(name)
        return out

    return run


def shared(rest, t, s, sites) -> dict:
    """One tensor of a shared transformer block first built at site position s."""
    simple = {"input_layernorm.weight": "norm.weight", "pre_ff_layernorm.weight": "ffn_norm.weight",
              "feed_forward.down_proj.weight": "ffn.down.weight"}
    if rest in simple:
        return {f"layers.{s}.{simple[rest]}": t}
    if m := re.fullmatch(r"self_attn\.([qkvo]_proj)\.weight", rest):
        return {f"layers.{s}.mixer.{m[1]}.weight": t}
    if rest == "feed_forward.gate_up_proj.weight":
        gate, up = t.chunk(2, dim=0)
        return {f"layers.{s}.ffn.gate.weight": gate, f"layers.{s}.ffn.up.weight": up}
    ab = {"0": "a", "1": "b"}
    if m := re.fullmatch(r"self_attn\.linear_([qkv])_adapter_list\.(\d+)\.([01])\.weight", rest):
        return {f"layers.{sites[int(m[2])]}.lora.{m[1]}_proj.{ab[m[3]]}.weight": t}
    if m := re.fullmatch(r"feed_forward\.gate_up_proj_adapter_list\.(\d+)\.([01])\.weight", rest):
        return {f"layers.{sites[int(m[1])]}.lora.ffn.{ab[m[2]]}.weight": t}
    raise KeyError(rest)


def program(types) -> str:
    items = " ".join(("attn mamba2" if t == "hybrid" else "mamba2") for t in types)
    return (f"dim {D}; vocab {V}; output logits; tie_embeddings true; norm rms eps={EPS}; dropout 0\n"
            f"mamba2 state={N} expand=2 head_dim={2 * D // HEADS} conv=4 groups=1 chunk=8 dt_min=0.05\n"
            f"attn heads={HEADS} head_dim={2 * D // HEADS} window=none qk_norm=false rope=true "
            f"scale={(D // HEADS) ** -0.5}\n"  # Zamba2Attention: (head_dim / 2) ** -0.5
            f"ffn act=gelu gated=true hidden={F}\n"
            f"layers {items}\n"
            f"share attn blocks=2 input=concat lora={R} lora_on=both into=next\n")


def config(types):
    return tf.Zamba2Config(vocab_size=V, hidden_size=D, num_hidden_layers=len(types), layers_block_type=types,
                           mamba_d_state=N, mamba_d_conv=4, mamba_expand=2, mamba_ngroups=1, n_mamba_heads=HEADS,
                           intermediate_size=F, hidden_act="gelu", num_attention_heads=HEADS, num_mem_blocks=2,
                           use_shared_attention_adapter=True, adapter_rank=R, use_mem_rope=True, rms_norm_eps=EPS,
                           time_step_min=0.05, chunk_size=8, tie_word_embeddings=True)


def test_zamba2_for_causal_lm(tmp_path):
    hf = tf.Zamba2ForCausalLM(config(TYPES))
    out = check_whole(hf, program(TYPES), convert(TYPES), vocab=V, jax=True, tmp_path=tmp_path)
    report("zamba2", out)
