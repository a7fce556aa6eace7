"""Call sites of shared blocks with `share` options in JAX (mirrors hybridc_torch/shared.py: same names, same math).

A site at position i reads its shared block's weights under `layers.<owner>.` (the block's first site: `norm`,
`mixer`, `ffn_norm`, `ffn`) and its own under `layers.<i>.` (`lora.<proj>.{a,b}.weight`, `linear.weight`).
An adapter's b(a(x)) reaches the layer as a per-token bias of its projection (the layers' `linear` adds
`<proj>.bias` by broadcasting), so the attention and FFN layers run unchanged.
into=next leaves linear(block output) in ctx["into_next"] for the next block (`fed`); input=concat reads
ctx["embed"] (the embedded input). The model's own pieces (norms, mixer dispatch, dropout) come in as `ops`
(hybridc_jax.model.SITE_OPS), so this module does not import the model.
"""
from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp

from hybridc.sharing import adapter_shapes, in_width

from .layers.common import bias_init, linear, linear_init, norm_init, prefixed, sub


def _layer(cfg, i):
    mixers, ffn = cfg.blocks[i]
    return SimpleNamespace(site=cfg.sites[i], mixers=mixers, ffn=ffn)


def init_site(M, cfg, i, key) -> dict:
    """Parameters held at site position i: the shared block's (at its first site) and the site's own."""
    layer, d = _layer(cfg, i), cfg.dim
    width, spec, ffn = in_width(layer.site, d), layer.mixers[0], layer.ffn
    k = jax.random.split(key, 4)
    p = {}
    if cfg.owner[i] == i:
        p |= prefixed("norm", norm_init(cfg.norm, width, cfg.norm_zero_centered))
        mix = M.kind_module(spec.kind).init(width, spec, key=k[0])
        if width != d:  # attention over 2D: o_proj (D, H*E)
            inner = spec.heads * spec.head_dim
            mix["o_proj.weight"] = linear_init(k[1], d, inner)
            if "o_proj.bias" in mix:
                mix["o_proj.bias"] = bias_init(k[1], d, inner)
        p |= prefixed("mixer", mix)
        if ffn is not None:
            p |= prefixed("ffn_norm", M._norm_init(cfg)) | prefixed("ffn", M._init_ffn_layer(cfg, ffn, k[2]))
    shapes = adapter_shapes(layer, d)
    for j, (name, (out, inp)) in enumerate(sorted(shapes.items())):
        p[name] = linear_init(jax.random.fold_in(k[3], j), out, inp)
    return p


def _adapter(p, proj, x):
    return linear(p, f"lora.{proj}.b", linear(p, f"lora.{proj}.a", x))


def _biases(p, mod_p, x, projs) -> dict:
    """{proj.bias: its bias (if any) + this site's adapter of x} for the adapted projections."""
    out = {}
    for proj in projs:
        if f"lora.{proj}.a.weight" in p:
            delta = _adapter(p, proj, x)  # (..., out)
            base = mod_p.get(f"{proj}.bias")
            out[f"{proj}.bias"] = delta if base is None else delta + base
    return out


def _mixer(M, spec, p, xn, st, ctx, fn, v_first):
    mp = sub(p, "mixer")
    biases = _biases(p, mp, xn, ("q_proj", "k_proj", "v_proj"))
    if not biases:
        return M.run_mixer(spec, fn, mp, xn, st, ctx, v_first)
    if fn == "step":  # attention: a step is the forward of one position
        mp |= {k: v[:, None] for k, v in biases.items()}
        y, new, v_first = M.run_mixer(spec, "apply", mp, xn[:, None], st, ctx, v_first)
        return y[:, 0], new, v_first
    return M.run_mixer(spec, fn, mp | biases, xn, st, ctx, v_first)


def _ffn(M, spec, p, h, st, ctx, fn):
    fp = sub(p, "ffn")
    if "lora.ffn.a.weight" in p:  # one adapter onto gate and up together ([gate; up]), or up alone
        delta = _adapter(p, "ffn", h)
        names = ("gate", "up") if "gate.weight" in fp else ("up",)
        for name, part in zip(names, jnp.split(delta, len(names), axis=-1)):
            base = fp.get(f"{name}.bias")
            fp = fp | {f"{name}.bias": part if base is None else part + base}
    return getattr(M.ffn_module(spec), fn)(fp, h, spec, st, ctx)


def site_block(M, cfg, p, i, x, st, ctx, fn, keys, v_first):
    """The call site at position i (see hybridc_torch/shared.py): p holds the block's and the site's parameters."""
    (spec,), ffn = cfg.blocks[i]
    site = cfg.sites[i]
    inp = jnp.concatenate([x, ctx["embed"]], axis=-1) if site.input == "concat" else x  # (.., D or 2D)
    y, sm, v_first = _mixer(M, spec, p, M._norm(cfg, p, "norm", inp), None if st is None else st["mixer"], ctx, fn,
                            v_first)
    new = None if st is None else {"mixer": sm}
    if site.into == "next":
        if ffn is not None:
            y, sf = _ffn(M, ffn, p, M._norm(cfg, p, "ffn_norm", y), None if st is None else st["ffn"], ctx, fn)
            new = new if new is None else {**new, "ffn": sf}
        ctx["into_next"] = M._dropout(linear(p, "linear", y), cfg.dropout, keys[0])
        return x, new, v_first
    x = x + cfg.residual_scale * M._dropout(y, cfg.dropout, keys[0])
    if ffn is not None:
        y, sf = _ffn(M, ffn, p, M._norm(cfg, p, "ffn_norm", x), None if st is None else st["ffn"], ctx, fn)
        x = x + cfg.residual_scale * M._dropout(y, cfg.dropout, keys[1])
        new = new if new is None else {**new, "ffn": sf}
    return x, new, v_first


def site_params(cfg, params, i) -> dict:
    """The parameters site i reads: its block's (under the owner's prefix) and its own (under its own)."""
    own = sub(params, f"layers.{i}")
    return sub(params, f"layers.{cfg.owner[i]}") | {k: v for k, v in own.items() if k.startswith(("lora.", "linear."))}


def fed(x, ctx):
    """The next block's norm input: x plus what a preceding into=next site left in ctx (taken once), or x."""
    t = ctx.pop("into_next", None) if ctx else None
    return x if t is None else x + t
