"""Shared blocks as Zamba2 uses them: the options of the `share` statement, the call sites, their exact costs.

`share attn` alone (today's form): every `attn` layer is one module. With options, each shared layer is a *call
site* of one of `blocks` shared blocks, used in turn (site k uses block k mod blocks, Zamba2's `num_mem_blocks`,
ABAB...), and may:

- `input=concat`: read concat(hidden, input embeddings) (B, L, 2D): the block's norm is over 2D, q/k/v read 2D, the
  output projection writes D (Zamba2AttentionDecoderLayer: input_layernorm over attention_hidden_size = 2*hidden_size);
- `lora=R lora_on=mlp|attn|both`: per-call-site rank-R adapters `b(a(x))` added to the block's q/k/v projections
  (Zamba2Attention's linear_{q,k,v}_adapter_list: a (R, in), b (out, R)) and/or to its FFN's gate and up together
  (Zamba2MLP's gate_up_proj_adapter_list: b writes [gate; up], (2F, R); the up alone for a plain FFN);
- `into=next`: Zamba2's dataflow. The block runs without residuals, `y = ffn(ffn_norm(mixer(norm(in))))`, a
  per-site `linear` (D, D) maps it back (Zamba2HybridLayer.linear), and the result t enters the *next* layer's input
  before that layer's norm only: `x + mixer(norm(x + t))` (Zamba2MambaDecoderLayer's transformer_hidden_states).
  `into=residual` (default): `x + mixer(norm(in))`, then the FFN sub-block, as any layer.

The resolved options of a site are a `Site` on its `Layer`; the shared weights are counted at the first site of each
block, the adapters and the linear at every site.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .kinds._base import Frozen

INPUTS = ("hidden", "concat")
LORA_ON = ("mlp", "attn", "both")
INTO = ("residual", "next")
OPTIONS = {"blocks": "an integer >= 1 (shared blocks used in turn)", "input": "hidden|concat",
           "lora": "an integer >= 0 (adapter rank; 0: none)", "lora_on": "mlp|attn|both", "into": "residual|next"}
FORMS = ("share KIND [blocks=N] [input=hidden|concat] [lora=R [lora_on=mlp|attn|both]] [into=residual|next]; "
         "input=concat and lora_on=attn|both need an attention kind, lora_on=mlp|both an FFN after it, into=next a "
         "layer after each site")


class Site(Frozen):
    """One call site of a shared block: which block, which site (0-based, in layer order) and the share options."""

    block: int = Field(0, ge=0, description="the shared block this site uses (site mod blocks)")
    index: int = Field(0, ge=0, description="the call site's number among the sites of its kind")
    blocks: int = Field(1, ge=1, description="shared blocks of this kind, used in turn")
    input: Literal["hidden", "concat"] = "hidden"
    lora: int = Field(0, ge=0, description="per-site adapter rank (0: none)")
    lora_on: Literal["mlp", "attn", "both"] = "both"
    into: Literal["residual", "next"] = "residual"

    @property
    def lora_attn(self) -> bool:
        return self.lora > 0 and self.lora_on in ("attn", "both")

    @property
    def lora_mlp(self) -> bool:
        return self.lora > 0 and self.lora_on in ("mlp", "both")

    def options(self) -> dict:
        """The share statement's options that differ from their defaults (canonical text order)."""
        out = {}
        for k in ("blocks", "input", "lora", "lora_on", "into"):
            if getattr(self, k) != Site.model_fields[k].default and not (k == "lora_on" and self.lora == 0):
                out[k] = getattr(self, k)
        return out


def in_width(site, dim: int) -> int:
    """Width the shared block's mixer reads: D, or 2D with input=concat."""
    return 2 * dim if site is not None and site.input == "concat" else dim


def qkv_widths(spec) -> dict:
    """Output widths of the attention projections the adapters add to (q_proj includes the output gate's half)."""
    inner, kv = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    return {"q_proj": inner * (2 if getattr(spec, "gate", False) else 1), "k_proj": kv, "v_proj": kv}


def ffn_width(ffn, dim: int) -> int:
    """Output width of the FFN projections the MLP adapter adds to: gate and up (2F), or up alone (F)."""
    f = ffn.hidden if ffn.hidden is not None else max(1, int(ffn.mult * dim))
    return 2 * f if (ffn.gated or ffn.act == "swiglu") else f


def adapter_shapes(layer, dim: int) -> dict:
    """Per-site tensors: name -> shape (torch layout, (out, in)); names as both backends build them."""
    site, out = layer.site, {}
    if site is None:
        return out
    r = site.lora
    if site.lora_attn:
        din = in_width(site, dim)
        for name, width in qkv_widths(layer.mixers[0]).items():
            out[f"lora.{name}.a.weight"] = (r, din)
            out[f"lora.{name}.b.weight"] = (width, r)
    if site.lora_mlp:
        out["lora.ffn.a.weight"] = (r, dim)
        out["lora.ffn.b.weight"] = (ffn_width(layer.ffn, dim), r)
    if site.into == "next":
        out["linear.weight"] = (dim, dim)
    return out


def site_params(layer, dim: int) -> int:
    """Parameters each call site owns: its adapters and its linear (none for a plain shared layer)."""
    return sum(a * b for a, b in adapter_shapes(layer, dim).values())


def site_flops(layer, dim: int) -> int:
    """FLOPs per token of a site's own tensors (2 per multiply-add)."""
    return 2 * site_params(layer, dim)


def mixer_params(spec, site, dim: int) -> int:
    """The shared mixer's parameters; with input=concat the attention reads 2D and writes D (o_proj (D, H*E))."""
    if site is None or site.input == "hidden":
        return spec.params(dim)
    inner = spec.heads * spec.head_dim
    return spec.params(2 * dim) - dim * inner - (dim if spec.o_bias else 0)


def mixer_flops(spec, site, dim: int, context: int, meta: int) -> int:
    if site is None or site.input == "hidden":
        return spec.flops(dim, context, meta)
    return spec.flops(2 * dim, context, meta) - 2 * dim * spec.heads * spec.head_dim


def block_extra_params(layer, norm: str, dim: int) -> int:
    """What a call site's shared block has beyond the same layer at width D: with input=concat, the norm over 2D
    and q/k/v reading 2D (o_proj still writes D)."""
    from .kinds._norm import norm_params

    site, spec = layer.site, layer.mixers[0]
    if site is None or site.input == "hidden":
        return 0
    return norm_params(norm, 2 * dim) - norm_params(norm, dim) + mixer_params(spec, site, dim) - spec.params(dim)


def block_extra_flops(layer, dim: int, context: int, meta: int) -> int:
    """FLOPs per token beyond the same layer at width D (input=concat), plus the site's adapters and linear."""
    site, spec = layer.site, layer.mixers[0]
    if site is None:
        return 0
    extra = mixer_flops(spec, site, dim, context, meta) - spec.flops(dim, context, meta)
    return extra + site_flops(layer, dim)


def site_text(layer) -> str:
    """What describe adds to a call site's options: its block and its own options."""
    site = layer.site
    if site is None:
        return ""
    opts = " ".join(f"{k}={v}" for k, v in site.options().items() if k != "blocks")
    return f"  @block {site.block + 1}/{site.blocks}" + (f" {opts}" if opts else "")


def no_sites(model, backend: str) -> None:
    """The compile emitters write `Block`s only: a model with call sites (share options) is built, not emitted."""
    if any(l.site is not None for l in model.layers):
        from .errors import BackendError

        raise BackendError(f"`hybridc compile --backend {backend}` cannot emit shared blocks with share options "
                           "(blocks, input, lora, into) yet; use hybridc.build")


def share_key(layer) -> tuple:
    """Layers with the same key use the same shared weights."""
    return (layer.kind, layer.site.block if layer.site is not None else 0)


def share_statements(model) -> list[str]:
    """The canonical `share` lines: the plain kinds on one line, each kind with options on its own."""
    plain, lines = [], []
    for kind in model.share:
        site = next((l.site for l in model.layers if l.kind == kind and l.site is not None), None)
        if site is None:
            plain.append(kind)
            continue
        from .options import render

        lines.append(f"share {kind} " + " ".join(f"{k}={render(v)}" for k, v in site.options().items()))
    return (["share " + " ".join(plain)] if plain else []) + lines


def _choice(kv, allowed) -> str:
    from .errors import HybridcError, suggest

    if kv.value.kind != "name" or kv.value.raw not in allowed:
        raise HybridcError(f"share {kv.key}: invalid value '{kv.value.raw}'; expected {'|'.join(allowed)}",
                           kv.value.pos, hint=suggest(kv.value.raw, allowed) or f"valid forms: {FORMS}")
    return kv.value.raw


def read_options(st) -> dict:
    """A `share` statement's options -> {name: (value, KV)}, with located errors (the valid forms listed)."""
    from .errors import HybridcError, suggest
    from .options import read_int

    out: dict = {}
    if st.options and len(st.kinds) != 1:
        raise HybridcError("share options apply to one kind: write `share KIND key=value` on its own line",
                           st.options[0].pos, hint=f"valid forms: {FORMS}")
    for kv in st.options:
        if kv.key not in OPTIONS:
            raise HybridcError(f"unknown option '{kv.key}' for share", kv.pos,
                               hint=(suggest(kv.key, OPTIONS) or "") + "\n  valid options: " +
                               "; ".join(f"{k}: {v}" for k, v in OPTIONS.items()))
        if kv.key in out:
            raise HybridcError(f"share {kv.key} is set twice", kv.pos)
        if kv.key == "blocks":
            value = read_int(kv.value, "share blocks", 1)
        elif kv.key == "lora":
            value = read_int(kv.value, "share lora (the adapter rank)", 0)
        else:
            value = _choice(kv, {"input": INPUTS, "lora_on": LORA_ON, "into": INTO}[kv.key])
        out[kv.key] = (value, kv)
    if "lora_on" in out and out.get("lora", (0,))[0] == 0:
        raise HybridcError("share lora_on needs adapters: add lora=R (the rank, >= 1)", out["lora_on"][1].pos,
                           hint=f"valid forms: {FORMS}")
    return out


def place_sites(layers: list, kind: str, opts: dict, norm_place: str = "pre") -> list:
    """Mark the layers of `kind` as call sites with the resolved options (site k uses block k mod blocks)."""
    from .errors import HybridcError

    values = {k: v for k, (v, _) in opts.items() if v != Site.model_fields[k].default}  # defaults: today's sharing
    if not values or set(values) == {"lora_on"}:
        return layers
    idx = [i for i, l in enumerate(layers) if l.kind == kind]
    spec, ffn = layers[idx[0]].mixers[0], layers[idx[0]].ffn
    attention = spec.ROLE == "attention"

    def fail(key, msg):
        raise HybridcError(f"share {kind} {key}={opts[key][0]}: {msg}", opts[key][1].pos, hint=f"valid forms: {FORMS}")

    if values.get("blocks", 1) > len(idx):
        fail("blocks", f"more shared blocks than the {len(idx)} '{kind}' layers that would use them")
    if values.get("input") == "concat" and not attention:
        fail("input", "concat needs an attention kind (it reads 2*dim and writes dim): share attn input=concat")
    on = values.get("lora_on", "both")
    if values.get("lora", 0):
        if on == "attn" and not attention:
            fail("lora_on", f"'{kind}' is not attention (lora_on=attn adapts q/k/v projections)")
        if on == "mlp" and ffn is None:
            fail("lora_on", f"the '{kind}' layers have no FFN sub-block (lora_on=mlp adapts its gate/up)")
        if on == "both" and not attention and ffn is None:
            fail("lora", f"the '{kind}' layers have neither q/k/v projections nor an FFN to adapt")
        if on in ("mlp", "both") and ffn is not None and ffn.experts:
            fail("lora_on" if "lora_on" in opts else "lora", f"the '{kind}' layers' FFN is a mixture of experts "
                 "(no single gate/up to adapt); write lora_on=attn")
    own = {getattr(layers[i], "norm_place", None) for i in idx} - {None}  # `at N norm place=` on a site
    norm_place = next(iter(own)) if own else norm_place
    if norm_place != "pre":  # the call sites run pre-norm sub-blocks only
        fail(next(iter(opts)), f"a shared block with options needs the block norms before each sub-block "
                               f"(`norm ... place=pre`), got place={norm_place}")
    if values.get("into") == "next":
        for i in idx:
            if i + 1 >= len(layers):
                fail("into", f"layer {i + 1} is the last: its output has no next layer to enter")
            if layers[i + 1].kind == kind:
                fail("into", f"layer {i + 2} after the site at layer {i + 1} is itself a call site")
    out = list(layers)
    for k, i in enumerate(idx):
        site = Site(block=k % values.get("blocks", 1), index=k, **values)
        out[i] = out[i].model_copy(update={"site": site})
    return out


__all__ = ["Site", "read_options", "place_sites", "OPTIONS", "FORMS", "adapter_shapes", "site_params", "site_flops", "mixer_params",
           "mixer_flops", "share_key", "share_statements", "in_width"]
