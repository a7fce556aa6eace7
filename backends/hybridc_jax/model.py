"""The hybrid model in JAX (mirrors hybridc_torch/model.py): pure `init`, `apply`, `init_state`, `step`.

Parameters are one flat dict whose names and shapes are the torch backend's (`layers.3.mixer.in_proj.weight`, ...);
a shared layer's weights appear once, under the first position that uses them (torch's `named_parameters`).
Block i: `x = x + drop(mixer(norm(x)))`, then `x = x + drop(ffn(ffn_norm(x)))` when the layer has an FFN; with
`norm_place` post `x + drop(post_norm(mixer(x)))`, both `x + drop(post_norm(mixer(norm(x))))`, the FFN alike (each
sub-block's output times `residual_scale` before the add); the embedded input times `embed_scale`; logits times
`logit_scale`, then soft-capped c * tanh(logits / c) with `logit_softcap`.
An IR kind's layer is the module `hybridc_jax.layers.<kind>` (`init`, `init_state`, `apply`, `step`); RWKV-7's value
residual (`v_first`) is threaded from layer to layer within one apply / step call (`run_mixer`).
"""
from __future__ import annotations

import importlib
from types import SimpleNamespace

import jax
import jax.numpy as jnp

from .layers import _hymba as hymba
from hybridc.sharing import share_key

from .shared import fed, init_site, site_block, site_params
from .layers.common import linear, linear_init, bias_init, norm_apply, norm_init, prefixed, sub

def kind_module(kind: str):
    """The JAX layer of an IR kind: the module `hybridc_jax.layers.<kind>`."""
    return importlib.import_module(f"{__package__}.layers.{kind}")


def ffn_module(spec):
    """The FFN's layer: RWKV-7's channel mix, the mixture of experts (`experts` > 0) or the dense FFN."""
    name = "rwkv" if spec.token_shift else "moe" if getattr(spec, "experts", 0) else "ffn"
    return importlib.import_module(f"{__package__}.layers.{name}")


def spec(kind=None, **options) -> SimpleNamespace:
    return SimpleNamespace(kind=kind, **options) if kind is not None else SimpleNamespace(**options)


class Config:
    """Static description of a model: model-wide settings, per-block `(mixer specs, ffn spec)`, and for each block
    the index of the block whose weights it uses (itself, or the first position of a shared layer)."""

    def __init__(self, *, dim, input, vocab, output, norm, dropout, meta, fusion, blocks, owner, tie=False,
                 embed_scale=1.0, residual_scale=1.0, logit_scale=1.0, logit_softcap=None, norm_eps=None,
                 norm_zero_centered=False, norm_place="pre", places=None, pad_token=None):
        self.norm_eps, self.norm_zero_centered, self.norm_place = norm_eps, norm_zero_centered, norm_place
        self.places = [norm_place] * len(blocks) if places is None else list(places)  # each block's norm placement
        self.dim, self.input, self.vocab, self.output, self.tie = dim, input, vocab, output, tie
        self.pad_token = pad_token  # the embedding's padding row: zero at init, no gradient through the lookup
        self.embed_scale, self.residual_scale = embed_scale, residual_scale
        self.logit_scale, self.logit_softcap = logit_scale, logit_softcap
        self.norm, self.dropout, self.meta, self.fusion = norm, dropout, meta, fusion
        self.blocks, self.owner = list(blocks), list(owner)

    @classmethod
    def from_ir(cls, model) -> "Config":
        blocks, owner, first, n = [], [], {}, len(model.layers)
        for i, layer in enumerate(model.layers):
            hint = {"layer_idx": i, "n_layers": n}  # RWKV-7's init depends on depth
            mixers = [spec(**m.model_dump(), **model.norm_hints, **(hint if m.kind == "rwkv" else {}))
                      for m in layer.mixers]
            ffn = None if layer.ffn is None else spec(**layer.ffn.model_dump(), **(hint if layer.ffn.token_shift else {}))
            blocks.append((mixers, ffn))
            owner.append(first.setdefault(share_key(layer), i) if layer.shared else i)
        cfg = cls(dim=model.dim, input=model.input, vocab=model.vocab, output=model.output, norm=model.norm,
                   dropout=model.dropout, meta=model.meta_tokens, fusion=model.fusion, blocks=blocks, owner=owner,
                   tie=model.tie_embeddings, embed_scale=model.embed_scale, residual_scale=model.residual_scale,
                   logit_scale=model.logit_scale, logit_softcap=model.logit_softcap, norm_eps=model.norm_eps,
                   norm_zero_centered=model.norm_zero_centered, norm_place=model.norm_place,
                   places=[model.layer_place(layer) for layer in model.layers], pad_token=model.pad_token)
        cfg.sites = [layer.site for layer in model.layers]  # call sites of shared blocks with options (shared.py)
        return cfg


# --- init --------------------------------------------------------------------------------------------------------------
def _init_ffn_layer(cfg, ffn, key) -> dict:
    if ffn.token_shift:
        return ffn_module(ffn).init_channel_mix(cfg.dim, ffn, key=key)
    return ffn_module(ffn).init(cfg.dim, ffn, key=key)


def _norm_init(cfg) -> dict:
    """One block/final/fusion norm's parameters (the model's kind; zero-centred: weight zeros)."""
    return norm_init(cfg.norm, cfg.dim, cfg.norm_zero_centered)


def _norm(cfg, p, prefix: str, x):
    """x through the norm `prefix` (the model's kind, eps, zero-centring), or x itself when the block has no norm
    there (`norm_place`: pre norms `norm`/`ffn_norm`, post norms `post_norm`/`ffn_post_norm`)."""
    if f"{prefix}.weight" not in p:
        return x
    return norm_apply(p, prefix, x, cfg.norm, cfg.norm_eps, cfg.norm_zero_centered)


def _init_block(cfg, mixers, ffn, key, place=None) -> dict:
    """A block's parameters; `place`: where its norms sit (default: the model's)."""
    k = jax.random.split(key, 5)
    place = cfg.norm_place if place is None else place
    pre, post = place in ("pre", "both"), place in ("post", "both")
    p = prefixed("norm", _norm_init(cfg)) if pre else {}
    if len(mixers) == 1:
        p |= prefixed("mixer", kind_module(mixers[0].kind).init(cfg.dim, mixers[0], key=k[0]))
    elif cfg.fusion == "hymba":  # one Hymba block: shared in_proj / out_proj (layers/_hymba.py)
        norms = lambda width: norm_init(cfg.norm, width, cfg.norm_zero_centered)  # noqa: E731
        p |= prefixed("mixer", hymba.init(cfg.dim, mixers, norms, key=k[0]))
    else:
        p |= prefixed("mixer.ssm", kind_module(mixers[0].kind).init(cfg.dim, mixers[0], key=k[0]))
        p |= prefixed("mixer.attn", kind_module(mixers[1].kind).init(cfg.dim, mixers[1], key=k[1]))
        if cfg.fusion == "gate":
            p |= {"mixer.gate.weight": linear_init(k[2], cfg.dim, cfg.dim), "mixer.gate.bias": bias_init(k[3], cfg.dim, cfg.dim)}
        elif cfg.fusion == "mean":
            p |= prefixed("mixer.norm_ssm", _norm_init(cfg)) | prefixed("mixer.norm_attn", _norm_init(cfg))
    p |= prefixed("post_norm", _norm_init(cfg)) if post else {}
    if ffn is not None:
        p |= (prefixed("ffn_norm", _norm_init(cfg)) if pre else {}) | prefixed("ffn", _init_ffn_layer(cfg, ffn, k[4]))
        p |= prefixed("ffn_post_norm", _norm_init(cfg)) if post else {}
    return p


def init(cfg: Config, key) -> dict:
    keys = jax.random.split(key, len(cfg.blocks) + 4)
    p = {}
    if cfg.vocab is not None:
        p["embed.weight"] = jax.random.normal(keys[0], (cfg.vocab, cfg.dim))
        if cfg.pad_token is not None:  # nn.Embedding(padding_idx=N): the pad row starts at zero
            p["embed.weight"] = p["embed.weight"].at[cfg.pad_token].set(0.0)
    elif cfg.input != cfg.dim:
        p["in_proj.weight"] = linear_init(keys[0], cfg.dim, cfg.input)
        p["in_proj.bias"] = bias_init(keys[1], cfg.dim, cfg.input)
    if cfg.meta:
        p["meta_tokens"] = jax.random.normal(keys[2], (cfg.meta, cfg.dim)) * 0.02
    for i, (mixers, ffn) in enumerate(cfg.blocks):
        if _site(cfg, i) is not None:
            p |= prefixed(f"layers.{i}", init_site(SITE_OPS, cfg, i, keys[4 + i]))
        elif cfg.owner[i] == i:
            p |= prefixed(f"layers.{i}", _init_block(cfg, mixers, ffn, keys[4 + i], cfg.places[i]))
    p |= prefixed("norm_f", _norm_init(cfg))
    if cfg.output == "logits" and not cfg.tie:  # tied: the head is embed.weight
        p["lm_head.weight"] = linear_init(keys[3], cfg.vocab, cfg.dim)
    return p


# --- state ---------------------------------------------------------------------------------------------------------------
def _mixer_state(cfg, s, batch, dtype, max_len):
    mod = kind_module(s.kind)
    if s.kind == "attn":
        return mod.init_state(cfg.dim, s, batch, dtype, max_len=max_len, meta=cfg.meta)
    return mod.init_state(cfg.dim, s, batch, dtype)


def init_state(cfg: Config, batch_size: int, *, max_len: int | None = None, dtype=jnp.float32) -> dict:
    """Zero decoding state with fixed shapes; `max_len` (stream length incl. meta tokens) sizes global attention caches."""
    layers = []
    for mixers, ffn in cfg.blocks:
        ms = [_mixer_state(cfg, s, batch_size, dtype, max_len) for s in mixers]
        st = {"mixer": ms[0] if len(ms) == 1 else {"ssm": ms[0], "attn": ms[1]}}
        if len(mixers) == 2 and cfg.fusion == "hymba":  # the attention's cache holds values E/heads wide
            st["mixer"] = hymba.init_state(cfg.dim, mixers, batch_size, dtype, max_len=max_len, meta=cfg.meta)
        if ffn is not None:
            mod = ffn_module(ffn)
            fn = mod.channel_mix_init_state if ffn.token_shift else mod.init_state
            st["ffn"] = fn(cfg.dim, ffn, batch_size, dtype)
        layers.append(st)
    return {"pos": jnp.zeros((), jnp.int32), "layers": layers}


# --- forward -------------------------------------------------------------------------------------------------------------
def _dropout(x, rate, key):
    if key is None or rate == 0:
        return x
    keep = jax.random.bernoulli(key, 1 - rate, x.shape)
    return jnp.where(keep, x / (1 - rate), 0)


def _fuse(cfg, p, x, a, b):
    if cfg.fusion == "gate":
        g = jax.nn.sigmoid(linear(p, "mixer.gate", x))  # (..., D)
        return g * a + (1 - g) * b
    if cfg.fusion == "sum":  # Falcon-H1: the branches added, no parameters
        return a + b
    return (_norm(cfg, p, "mixer.norm_ssm", a) + _norm(cfg, p, "mixer.norm_attn", b)) / 2


def run_mixer(spec, fn: str, params, x, state, ctx, v_first):
    """A mixer's `apply` (or `step`) -> (y, new_state, v_first): layers that carry RWKV-7's value residual
    (`CARRIES_V_FIRST`) take and return v_first, the others pass it through."""
    mod = kind_module(spec.kind)
    if getattr(mod, "CARRIES_V_FIRST", False):
        return getattr(mod, fn)(params, x, spec, state, ctx, v_first)
    y, new_state = getattr(mod, fn)(params, x, spec, state, ctx)
    return y, new_state, v_first


def _mix(cfg, p, mixers, h, st, ctx, fn: str, v_first):
    if len(mixers) == 1:
        return run_mixer(mixers[0], fn, sub(p, "mixer"), h, st, ctx, v_first)
    if cfg.fusion == "hymba":
        y, new = getattr(hymba, fn)(sub(p, "mixer"), h, mixers, lambda q, name, x: _norm(cfg, q, name, x), st, ctx)
        return y, new, v_first
    a, sa, v_first = run_mixer(mixers[0], fn, sub(p, "mixer.ssm"), h, None if st is None else st["ssm"], ctx, v_first)
    b, sb, v_first = run_mixer(mixers[1], fn, sub(p, "mixer.attn"), h, None if st is None else st["attn"], ctx,
                               v_first)
    return _fuse(cfg, p, h, a, b), (None if st is None else {"ssm": sa, "attn": sb}), v_first


def _block(cfg, p, i, x, st, ctx, fn, keys, v_first):
    if _site(cfg, i) is not None:  # a call site of a shared block with share options (shared.py)
        return site_block(SITE_OPS, cfg, p, i, x, st, ctx, fn, keys, v_first)
    mixers, ffn = cfg.blocks[i]
    y, sm, v_first = _mix(cfg, p, mixers, _norm(cfg, p, "norm", fed(x, ctx)), None if st is None else st["mixer"],
                          ctx, fn, v_first)  # fed: plus a preceding shared site's output (into=next, Zamba2)
    x = x + cfg.residual_scale * _dropout(_norm(cfg, p, "post_norm", y), cfg.dropout, keys[0])
    new = None if st is None else {"mixer": sm}
    if ffn is not None:
        mod = ffn_module(ffn)
        call = getattr(mod, ("channel_mix_" if ffn.token_shift else "") + fn)
        y, sf = call(sub(p, "ffn"), _norm(cfg, p, "ffn_norm", x), ffn, None if st is None else st["ffn"], ctx)
        x = x + cfg.residual_scale * _dropout(_norm(cfg, p, "ffn_post_norm", y), cfg.dropout, keys[1])
        if new is not None:
            new["ffn"] = sf
    return x, new, v_first


def _embed(cfg, params, x):
    if cfg.vocab is not None:
        w = params["embed.weight"]  # (V, D)
        if cfg.pad_token is not None:  # the pad row gets no gradient from the lookup (a tied head still reads it)
            w = w.at[cfg.pad_token].set(jax.lax.stop_gradient(w[cfg.pad_token]))
        h = w[x]
    else:
        h = linear(params, "in_proj", x) if cfg.input != cfg.dim else x
    return h * cfg.embed_scale if cfg.embed_scale != 1.0 else h


def _out(cfg, params, h, last_only):
    h = _norm(cfg, params, "norm_f", h)
    if cfg.output == "logits":
        z = h @ params["embed.weight"].T if cfg.tie else linear(params, "lm_head", h)  # (.., V)
        z = z * cfg.logit_scale if cfg.logit_scale != 1.0 else z
        return z if cfg.logit_softcap is None else cfg.logit_softcap * jnp.tanh(z / cfg.logit_softcap)
    return h[:, -1] if (cfg.output == "last" and last_only) else h


def _concrete_zero(pos) -> bool:
    try:
        return int(pos) == 0
    except (TypeError, jax.errors.ConcretizationTypeError):
        return False


def apply(cfg: Config, params, x, state=None, *, key=None, train=False, start=None, return_aux=False):
    """x (B, L, F) or (B, L) ids -> y, or (y, new_state) when a state is given (see the torch backend).

    `return_aux`: also the MoE layers' aux losses, summed over the layers ({"load_balance", "z_loss"} scalars, None
    when the model has no MoE): `(y, aux)` or `((y, new_state), aux)`.

    With meta tokens they are prepended when this chunk starts the stream: `start=True/False`, or (default) when
    `state["pos"]` is a concrete 0. Under `jit`, pass `start` (a static Python bool) for a prefill.
    """
    key = key if train else None
    h = _embed(cfg, params, x)  # (B, L, D)
    pos = 0 if state is None else state["pos"]
    if start is None and cfg.meta and state is not None and isinstance(pos, jax.core.Tracer):
        raise ValueError("with meta tokens, a jitted prefill needs start=True (first chunk) or start=False")
    if start is None:
        start = state is None or _concrete_zero(pos)
    lead = cfg.meta if (cfg.meta and start) else 0
    if lead:
        h = jnp.concatenate([jnp.broadcast_to(params["meta_tokens"].astype(h.dtype), (h.shape[0],) + params["meta_tokens"].shape), h], 1)
    keys = list(jax.random.split(key, 2 * len(cfg.blocks) + 1)) if key is not None else [None] * (2 * len(cfg.blocks) + 1)
    h = _dropout(h, cfg.dropout, keys[-1])
    ctx = {"pos": pos, "pos_offset": pos, "meta": cfg.meta, "meta_in_chunk": lead, "embed": h}  # embed: input=concat
    if return_aux:
        ctx["aux"] = []  # the MoE layers append theirs (layers/moe.py)
    states, v_first = [], None
    for i in range(len(cfg.blocks)):
        h, st, v_first = _block(cfg, sub_owner(cfg, params, i), i, h, None if state is None else state["layers"][i],
                                ctx, "apply", keys[2 * i:2 * i + 2], v_first)
        states.append(st)
    h = h[:, lead:]
    y = _out(cfg, params, h, last_only=True)
    out = y if state is None else (y, {"pos": pos + x.shape[1] + lead, "layers": states})
    return (out, _sum_aux(ctx["aux"])) if return_aux else out


def _sum_aux(found: list) -> dict | None:
    return {k: sum(a[k] for a in found) for k in found[0]} if found else None


def _site(cfg, i):
    sites = getattr(cfg, "sites", None)
    return None if sites is None else sites[i]


def sub_owner(cfg, params, i):
    if _site(cfg, i) is not None:
        return site_params(cfg, params, i)
    return sub(params, f"layers.{cfg.owner[i]}")


def step(cfg: Config, params, x_t, state):
    """One step: x_t (B, F) or (B,) ids -> (y_t, new_state). With meta tokens, decoding starts with a prefill (`apply`)."""
    h = _embed(cfg, params, x_t)  # (B, D)
    pos = state["pos"]
    ctx = {"pos": pos, "pos_offset": pos, "meta": cfg.meta, "meta_in_chunk": 0, "embed": h}
    states, v_first = [], None
    for i in range(len(cfg.blocks)):
        h, st, v_first = _block(cfg, sub_owner(cfg, params, i), i, h, state["layers"][i], ctx, "step", [None, None],
                                v_first)
        states.append(st)
    return _out(cfg, params, h, last_only=False), {"pos": pos + 1, "layers": states}


# the model's pieces a shared block's call site uses (shared.py does not import this module)
SITE_OPS = SimpleNamespace(kind_module=kind_module, ffn_module=ffn_module, run_mixer=run_mixer, _norm=_norm,
                           _norm_init=_norm_init, _init_ffn_layer=_init_ffn_layer, _dropout=_dropout)
