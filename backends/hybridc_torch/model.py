"""The hybrid model: blocks built from the IR, the residual stream, meta tokens, the outputs, decoding.

Block i: `x = x + drop(mixer(norm(x)))`, then, if the layer has an FFN, `x = x + drop(ffn(ffn_norm(x)))`; with
`norm place=post` (OLMo-2) `x = x + drop(post_norm(mixer(x)))`, with `place=both` (Gemma-2's sandwich)
`x = x + drop(post_norm(mixer(norm(x))))`, the FFN alike with `ffn_norm` / `ffn_post_norm`; with
`residual_scale` r (Granite) each sub-block's output is multiplied by r before the add. The embedded input is multiplied
by `embed_scale`; logits by `logit_scale`, then soft-capped with `logit_softcap` c: c * tanh(logits / c).
A parallel block runs two mixers on the same normed input and fuses them: `gate` (the seeds'):
`g*ssm + (1-g)*attn` with `g = sigmoid(W x_norm)` per channel; `mean` (Hymba): `(norm(ssm) + norm(attn)) / 2`;
`sum` (Falcon-H1): `ssm + attn`.
Meta tokens (Hymba) are prepended to the stream before the first block and removed before the output.

Decoding: `state = model.init_state(B, max_len=N)`; `y, state = model(x, state=state)` (prefill, any number of
chunks); `y_t, state = model.step(x_t, state)`. The state is `{"pos": int, "max_len": int or None, "layers": [block
states]}`; attention caches are fixed buffers written in place (layers/attn.py): a state is consumed by the call
that returns the next one.

A kind's layer is `hybridc_torch.layers.<kind>.LAYER`, built as `LAYER(dim, spec, impl=impl)`; every mixer runs as
`mixer(x, state, ctx) -> (y, new_state)` (`step` alike), where ctx holds the positions (`pos`, `pos_offset`, `meta`).
RWKV-7's value residual is a second stream beside the residual one: its layers (`carries_v_first`) also take and
return `v_first`, which the blocks thread from layer to layer within one forward or step call.
"""
from __future__ import annotations

import importlib
from types import SimpleNamespace

import torch
from torch import nn

from hybridc.sharing import share_key

from .layers._hymba import HymbaMixer
from .layers._norm import make_norm as norm_module
from .layers.ffn import FFN
from .shared import SharedSite, block_state, build_block, fed


def make_norm(norm, dim: int) -> nn.Module:
    """norm: "layer" | "rms" (each with its own eps), or `spec(kind=, eps=, zero_centered=)` from the model's `norm`
    statement (`norm_spec`); see layers/_norm.py."""
    if isinstance(norm, str):
        return norm_module(norm, dim)
    return norm_module(norm.kind, dim, norm.eps, norm.zero_centered)


def norm_spec(model):
    """The model's block/final/fusion norm as `make_norm` takes it: the kind alone unless eps or zero_centered is set."""
    if not model.norm_hints:
        return model.norm
    return spec(kind=model.norm, eps=model.norm_eps, zero_centered=model.norm_zero_centered)


def _normed(norm, x):
    """x through a block norm, or unchanged where the placement has none there."""
    return x if norm is None else norm(x)


def _residual(x, y, scale: float):
    """x + scale * y, one op (no multiply by 1: a decoding step is a few dozen small ops per layer)."""
    return x + y if scale == 1.0 else torch.add(x, y, alpha=scale)


def layer_class(kind: str) -> type[nn.Module]:
    """The torch layer of an IR kind: `LAYER` of its module `hybridc_torch.layers.<kind>`."""
    return importlib.import_module(f"{__package__}.layers.{kind}").LAYER


def make_mixer(spec, dim: int, impl: str) -> nn.Module:
    return layer_class(spec.kind)(dim, spec, impl=impl)


def run_mixer(mixer, x, state, ctx, v_first, step: bool = False):
    """Run a mixer's forward (or step) -> (y, new_state, v_first); mixers that carry RWKV-7's value residual take
    and return v_first, the others pass it through. With ctx["inplace"] (`model.step(..., inplace=True)`), a mixer
    with `step_` updates its state in place and that same state is returned."""
    if step and ctx is not None and ctx.get("inplace") and hasattr(mixer, "step_"):
        return mixer.step_(x, state, ctx), state, v_first
    fn = mixer.step if step else mixer
    if getattr(mixer, "carries_v_first", False):
        return fn(x, state, ctx, v_first)
    y, new_state = fn(x, state, ctx)
    return y, new_state, v_first


def make_ffn(spec, dim: int, impl: str) -> nn.Module:
    if spec.token_shift:
        from .layers.rwkv import RWKV7ChannelMix

        return RWKV7ChannelMix(dim, spec.mult, layer_idx=getattr(spec, "layer_idx", 0) or 0,
                               n_layers=getattr(spec, "n_layers", 1) or 1)
    if getattr(spec, "experts", 0):  # a mixture of experts (layers/moe.py)
        from .layers.moe import MoE

        return MoE(dim, spec, impl=impl)
    return FFN(dim, spec, impl=impl)


class Parallel(nn.Module):
    """Two mixers side by side on the same input, fused by a learned gate or by Hymba's normalised mean."""

    carries_v_first = True   # either branch may be an RWKV-7 layer

    def __init__(self, dim: int, specs, fusion: str, norm: str, impl: str):
        super().__init__()
        self.ssm = make_mixer(specs[0], dim, impl)
        self.attn = make_mixer(specs[1], dim, impl)
        self.fusion = fusion
        if fusion == "gate":
            self.gate = nn.Linear(dim, dim)
        elif fusion == "mean":
            self.norm_ssm, self.norm_attn = make_norm(norm, dim), make_norm(norm, dim)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict:
        return {"ssm": self.ssm.init_state(batch_size, device, dtype), "attn": self.attn.init_state(batch_size, device, dtype)}

    def _fuse(self, x, a, b):
        if self.fusion == "gate":
            g = torch.sigmoid(self.gate(x))  # (..., D)
            return g * a + (1 - g) * b
        if self.fusion == "sum":  # Falcon-H1: the branches added, no parameters
            return a + b
        return (self.norm_ssm(a) + self.norm_attn(b)) / 2

    def forward(self, x, state=None, ctx=None, v_first=None):
        a, sa, v_first = run_mixer(self.ssm, x, None if state is None else state["ssm"], ctx, v_first)
        b, sb, v_first = run_mixer(self.attn, x, None if state is None else state["attn"], ctx, v_first)
        return self._fuse(x, a, b), (None if state is None else {"ssm": sa, "attn": sb}), v_first

    def step(self, x_t, state, ctx=None, v_first=None):
        a, sa, v_first = run_mixer(self.ssm, x_t, state["ssm"], ctx, v_first, step=True)
        b, sb, v_first = run_mixer(self.attn, x_t, state["attn"], ctx, v_first, step=True)
        return self._fuse(x_t, a, b), {"ssm": sa, "attn": sb}, v_first


def spec(kind: str | None = None, **options) -> SimpleNamespace:
    """A plain spec object (what layers read: attributes), as the compile emitter writes them."""
    return SimpleNamespace(kind=kind, **options) if kind is not None else SimpleNamespace(**options)


class Block(nn.Module):
    """One layer: mixer (or parallel pair of mixers) with residual, then the optional FFN sub-block; each sub-block's
    norms sit before it (`norm`, `ffn_norm`), after it (`post_norm`, `ffn_post_norm`) or both (`norm_place`)."""

    def __init__(self, mixers, ffn=None, *, dim: int, norm: str = "layer", fusion: str = "gate", dropout: float = 0.0,
                 impl: str = "auto", residual_scale: float = 1.0, norm_place: str = "pre"):
        super().__init__()
        self.residual_scale = residual_scale  # each sub-block's output times this before the add (Granite)
        pre, post = norm_place in ("pre", "both"), norm_place in ("post", "both")  # where the block norms sit
        self.norm = make_norm(norm, dim) if pre else None
        if len(mixers) == 2 and fusion == "hymba":  # one Hymba block: shared in_proj / out_proj (layers/_hymba.py)
            self.mixer = HymbaMixer(dim, mixers, lambda width: make_norm(norm, width), impl)
        elif len(mixers) == 2:
            self.mixer = Parallel(dim, mixers, fusion, norm, impl)
        else:
            self.mixer = make_mixer(mixers[0], dim, impl)
        self.post_norm = make_norm(norm, dim) if post else None
        if ffn is not None:
            self.ffn_norm = make_norm(norm, dim) if pre else None
            self.ffn = make_ffn(ffn, dim, impl)
            self.ffn_post_norm = make_norm(norm, dim) if post else None
        self.has_ffn = ffn is not None
        self.drop = nn.Dropout(dropout)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> dict:
        return block_state(self, batch_size, device, dtype)

    def forward(self, x, state=None, ctx=None, v_first=None):
        """x (B, L, D) -> (x (B, L, D), new_state or None, v_first)."""
        y, sm, v_first = run_mixer(self.mixer, _normed(self.norm, fed(x, ctx)), None if state is None else state["mixer"],
                                   ctx, v_first)  # fed: plus a preceding shared site's output (into=next, Zamba2)
        x = x + self.residual_scale * self.drop(_normed(self.post_norm, y))
        new = None if state is None else {"mixer": sm}
        if self.has_ffn:
            y, sf = self.ffn(_normed(self.ffn_norm, x), None if state is None else state["ffn"], ctx)
            x = x + self.residual_scale * self.drop(_normed(self.ffn_post_norm, y))
            if new is not None:
                new["ffn"] = sf
        return x, new, v_first

    def step(self, x_t, state, ctx=None, v_first=None):
        """x_t (B, D) -> (x_t (B, D), new_state, v_first)."""
        y, sm, v_first = run_mixer(self.mixer, _normed(self.norm, fed(x_t, ctx)), state["mixer"], ctx, v_first, step=True)
        x_t = _residual(x_t, _normed(self.post_norm, y), self.residual_scale)
        new = {"mixer": sm}
        if self.has_ffn:
            y, new["ffn"] = self.ffn.step(_normed(self.ffn_norm, x_t), state["ffn"], ctx)
            x_t = _residual(x_t, _normed(self.ffn_post_norm, y), self.residual_scale)
        return x_t, new, v_first


class HybridBase(nn.Module):
    """Everything around the blocks: input embedding/projection, meta tokens, final norm, head, decoding.

    Subclasses set `self.layers` (an nn.ModuleList of `Block`s). forward takes (B, L, F) floats or (B, L) token ids.
    """

    def __init__(self, *, dim: int, input=None, vocab=None, output: str = "last", norm: str = "layer",
                 dropout: float = 0.0, meta_tokens: int = 0, tie_embeddings: bool = False, embed_scale: float = 1.0,
                 logit_scale: float = 1.0, logit_softcap=None, pad_token=None):
        super().__init__()
        self.cfg = spec(dim=dim, input=input, vocab=vocab, output=output, meta_tokens=meta_tokens,
                        embed_scale=embed_scale, logit_scale=logit_scale, logit_softcap=logit_softcap)
        if vocab is not None:
            self.embed = nn.Embedding(vocab, dim, padding_idx=pad_token)  # pad_token: row zero, no gradient
        elif input != dim:
            self.in_proj = nn.Linear(input, dim)
        if meta_tokens:
            self.meta_tokens = nn.Parameter(torch.randn(meta_tokens, dim) * 0.02)
        self.norm_f = make_norm(norm, dim)
        if output == "logits":
            self.lm_head = nn.Linear(dim, vocab, bias=False)
            if tie_embeddings:  # one Parameter: named_parameters lists it once, as embed.weight
                self.lm_head.weight = self.embed.weight
        self.drop = nn.Dropout(dropout)

    # --- pieces ------------------------------------------------------------------------------------------------
    def _embed(self, x):
        if self.cfg.vocab is not None:
            h = self.embed(x)
        else:
            h = self.in_proj(x) if self.cfg.input != self.cfg.dim else x
        return h * self.cfg.embed_scale if self.cfg.embed_scale != 1.0 else h

    def _out(self, h, last_only: bool):
        h = self.norm_f(h)
        if self.cfg.output == "logits":
            return self._logits(self.lm_head(h))
        return h[:, -1] if (self.cfg.output == "last" and last_only) else h

    def _logits(self, z):
        """Logits times logit_scale, then soft-capped: c * tanh(z / c) (RecurrentGemma's final_logit_softcapping)."""
        z = z * self.cfg.logit_scale if self.cfg.logit_scale != 1.0 else z
        cap = self.cfg.logit_softcap
        return z if cap is None else cap * torch.tanh(z / cap)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32, *, max_len: int | None = None) -> dict:
        """Zero decoding state: position 0, each block's empty caches / zero recurrent states. max_len: the stream
        length (meta tokens included) global attention caches are sized for, in one buffer (decoding past it is an
        error); None: those caches double when full."""
        device = device if device is not None else self.norm_f.weight.device
        return {"pos": 0, "max_len": max_len,
                "layers": [blk.init_state(batch_size, device, dtype) for blk in self.layers]}

    # --- forward / decoding ------------------------------------------------------------------------------------
    def forward(self, x, state=None):
        """x (B, L, F) or (B, L) ids -> output (`last`: (B, D); `sequence`: (B, L, D); `logits`: (B, L, V)).

        With `state`: continues from it and returns `(y, new_state)`; meta tokens are prepended at position 0.
        """
        h = self._embed(x)  # (B, L, D)
        pos = 0 if state is None else state["pos"]
        m = self.cfg.meta_tokens
        if m and pos == 0:
            h = torch.cat([self.meta_tokens.to(h.dtype).expand(h.shape[0], -1, -1), h], dim=1)  # (B, M+L, D)
        h = self.drop(h)
        max_len = None if state is None else state.get("max_len")
        ctx = {"pos": pos, "pos_offset": pos, "meta": m, "embed": h, "max_len": max_len}  # embed: shared input=concat
        v_first = None
        states = []
        for i, blk in enumerate(self.layers):
            h, st, v_first = blk(h, None if state is None else state["layers"][i], ctx, v_first)
            states.append(st)
        if m and pos == 0:
            h = h[:, m:]
        y = self._out(h, last_only=True)
        if state is None:
            return y
        return y, {"pos": pos + x.shape[1] + (m if pos == 0 else 0), "max_len": max_len, "layers": states}

    def step(self, x_t, state, *, inplace: bool = False):
        """One step: x_t (B, F) or (B,) ids -> (y_t, new_state); y_t (B, D) or (B, V) logits. inplace: the mixers
        that have one run their in-place `step_` (Mamba's fused C++ step; `generate` decodes so)."""
        if self.cfg.meta_tokens and state["pos"] == 0:
            y, state = self.forward(x_t[:, None], state)
            return (y[:, -1] if y.dim() == 3 else y), state
        h = self._embed(x_t)  # (B, D)
        ctx, v_first = {"pos": state["pos"], "pos_offset": state["pos"], "meta": self.cfg.meta_tokens, "embed": h,
                        "max_len": state.get("max_len"), "inplace": inplace}, None
        states = []
        for i, blk in enumerate(self.layers):
            h, st, v_first = blk.step(h, state["layers"][i], ctx, v_first)
            states.append(st)
        y = self._out(h, last_only=False)
        return y, {"pos": state["pos"] + 1, "max_len": state.get("max_len"), "layers": states}

    def aux_losses(self) -> dict | None:
        """The MoE layers' aux losses of the last forward in training mode (or with a layer's `aux` flag set):
        {"load_balance", "z_loss"} scalar tensors summed over the layers; None when no layer computed any."""
        found = [m.last_aux for m in self.modules() if getattr(m, "last_aux", None) is not None]
        if not found:
            return None
        return {k: sum(a[k] for a in found) for k in found[0]}


def ir_spec(m, **extra) -> SimpleNamespace:
    """IR spec (Pydantic) -> plain spec object (plus init-only hints such as RWKV's layer_idx)."""
    return spec(**m.model_dump(), **extra)


class HybridModel(HybridBase):
    """A hybridc `Model` lowered to torch; shared layers are one module at several positions."""

    def __init__(self, model, *, impl: str = "auto"):
        super().__init__(dim=model.dim, input=model.input, vocab=model.vocab, output=model.output, norm=norm_spec(model),
                         dropout=model.dropout, meta_tokens=model.meta_tokens, tie_embeddings=model.tie_embeddings,
                         embed_scale=model.embed_scale, logit_scale=model.logit_scale,
                         logit_softcap=model.logit_softcap, pad_token=model.pad_token)
        self.ir = model
        shared: dict = {}
        blocks = []
        n = len(model.layers)
        for i, layer in enumerate(model.layers):
            key = share_key(layer)  # (kind, block): the weights a shared layer uses
            if layer.shared and key in shared and layer.site is None:
                blocks.append(shared[key])
                continue
            hint = {"layer_idx": i, "n_layers": n}  # RWKV-7's init depends on depth
            mixers = [ir_spec(m, **model.norm_hints, **(hint if m.kind == "rwkv" else {})) for m in layer.mixers]
            ffn = None if layer.ffn is None else ir_spec(layer.ffn, **(hint if layer.ffn.token_shift else {}))
            if layer.site is not None:  # a call site of a shared block with share options (shared.py)
                if key not in shared:
                    shared[key] = build_block(make_norm, make_mixer, make_ffn, mixers[0], ffn, layer.site,
                                              dim=model.dim, norm=norm_spec(model), impl=impl)
                blocks.append(SharedSite(shared[key], layer, dim=model.dim, dropout=model.dropout,
                                         residual_scale=model.residual_scale))
                continue
            blk = Block(mixers, ffn, dim=model.dim, norm=norm_spec(model), fusion=model.fusion, dropout=model.dropout,
                        impl=impl, residual_scale=model.residual_scale, norm_place=model.layer_place(layer))
            if layer.shared:
                shared[key] = blk
            blocks.append(blk)
        self.layers = nn.ModuleList(blocks)


def state_tensors(state) -> list:
    """All tensors of a decoding state (for byte counts and comparisons)."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for v in state.values() for t in state_tensors(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in state_tensors(v)]
    return []


def state_bytes(state) -> int:
    """Bytes of the floating-point tensors of a state (what `hybridc describe` reports)."""
    return sum(t.numel() * t.element_size() for t in state_tensors(state) if t.is_floating_point())
