"""The FFN sub-block after a mixer, `x + ffn(norm(x))`, and the standalone MLP's feed-forward (docs/layers.md).

Plain form: `up` (F, D), activation, `down` (D, F); gated form (`gated=true`, or `act=swiglu`, which is silu gated):
`down(act(gate(x)) * up(x))` with `gate` (F, D) too. Falcon-H1's muP multipliers, no parameters: `gate_scale` (gated
form: act(gate(x) * gate_scale)) and `down_scale` (the output times down_scale). Biases on every projection or none (`bias`: default on for the
plain form, off for the gated one). F = `hidden` when given (it wins over `mult` wherever both are given), else
int(mult * D). `token_shift` is RWKV-7's channel mixing (fla's RWKV7FeedForward): a token-shift lerp `x_k` (D,),
`key` (F', D), relu^2, `value` (D, F'), no biases, F' = int(mult * D) rounded up to 32.

Mixture of experts (`experts=E`, 0 = the dense FFN): a router `router.weight` (E, D) scores each token
(`router=softmax|sigmoid`, in fp32), the `top_k` best experts run (`renorm`: their weights rescaled to sum 1) and the
output is sum_k w_k expert_k(x); each expert is this FFN's form (plain or gated, width F, no biases), stacked:
`experts.gate_up_proj` (E, 2F, D) or `experts.up_proj` (E, F, D), and `experts.down_proj` (E, D, F).
`shared_experts=S` adds one dense FFN `shared.*` of width `shared_hidden` (auto: S * F) run on every token, optionally
gated by sigmoid(`shared_gate.weight` (1, D) x) (Qwen3-Next). docs/layers.md has the math and the aux losses.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from ._base import Frozen

Act = Literal["gelu", "gelu_tanh", "silu", "relu", "relu2", "swiglu"]
AFTER = ("attn", "all", "none")  # `ffn after=...`: which layers get the FFN sub-block
MULT = 4.0  # the default width factor (the one place it is written)
FORMS = ("plain: act=gelu|gelu_tanh|silu|relu|relu2 (up, down); gated: act=gelu|gelu_tanh|silu|relu|relu2 gated=true "
         "(gate, up, down: act(gate(x)) * up(x)); act=swiglu (= act=silu gated=true)")


MOE_KEYS = ("experts", "top_k", "shared_experts", "shared_hidden", "shared_gate", "router", "renorm")
MOE_FORMS = ("experts=E top_k=K (K <= E) [shared_experts=S [shared_hidden=N] [shared_gate=true]] "
             "[router=softmax|sigmoid] [renorm=true|false], no bias/token_shift/gate_scale/down_scale")


def is_gated(act: str, gated: bool) -> bool:
    return gated or act == "swiglu"


def default_bias(act: str, gated: bool, experts: int = 0) -> bool:
    """Biases by default: on for the plain form, off for the gated one (today's gelu/... and swiglu) and for experts."""
    return not is_gated(act, gated) and not experts


def settle(options: dict, cls=None) -> dict:
    """The FFN options with `bias` filled (auto/None -> the form's default), `mult` reset when `hidden` is given
    (hidden wins), and bad combinations rejected (ValueError listing the valid forms). `cls`: the spec class whose
    defaults apply (FFNSpec when not given; the `moe` kind's experts default to 8)."""
    out = dict(options)
    fields = (cls or FFNSpec).model_fields  # the defaults are the fields'
    act, gated = out.get("act", fields["act"].default), out.get("gated", fields["gated"].default)
    if act == "swiglu" and gated is True:
        raise ValueError("act=swiglu is already gated (write act=silu gated=true, or act=swiglu); "
                         f"valid forms: {FORMS}")
    experts = out.get("experts", fields["experts"].default)
    experts = experts if isinstance(experts, int) and not isinstance(experts, bool) else 0
    if out.get("bias", "auto") == "auto":
        out["bias"] = default_bias(act, gated if isinstance(gated, bool) else False, experts)
    for name in ("token_shift", "gate_scale", "down_scale") if experts else ():
        if out.get(name, False if name == "token_shift" else 1.0) not in (False, 1.0):
            raise ValueError(f"{name} does not apply to experts (experts={experts}); valid: {MOE_FORMS}")
    if out.get("hidden") not in (None, "auto"):
        out["mult"] = MULT
    if out.get("gate_scale", 1.0) != 1.0 and not is_gated(act, gated is True):
        raise ValueError(f"gate_scale={out['gate_scale']} needs a gated FFN (valid: gated=true or act=swiglu with "
                         f"gate_scale=X; forms: {FORMS})")
    return out


class FFNOptions(Frozen):
    """The options the FFN sub-block (`FFNSpec`) and the standalone `mlp` / `moe` kinds share: width, activation,
    muP scales, mixture of experts. Each subclass declares `bias` (and FFNSpec `token_shift`)."""

    mult: float = Field(MULT, gt=0, le=64, description="hidden = int(mult * dim) (unless hidden is given)")
    act: Act = Field("gelu", description="activation (swiglu: silu, gated)")
    gated: bool = Field(False, description="act(gate(x)) * up(x)")
    hidden: Optional[int] = Field(None, ge=1, le=10_000_000, description="explicit hidden width (wins over mult)")
    gate_scale: float = Field(1.0, gt=0, description="gated form: act(gate(x) * gate_scale) * up(x) (Falcon-H1's "
                              "mlp_multipliers[0])")
    down_scale: float = Field(1.0, gt=0, description="the output down(h) is multiplied by this (Falcon-H1's "
                              "mlp_multipliers[1])")
    experts: int = Field(0, ge=0, le=1_000_000, description="mixture of experts: routed experts of width hidden/mult "
                         "(0: a dense FFN)")
    top_k: int = Field(2, ge=1, le=1_000_000, description="experts each token is routed to (<= experts)")
    shared_experts: int = Field(0, ge=0, le=1_000_000, description="shared experts: one dense FFN of width "
                                "shared_hidden run on every token")
    shared_hidden: Optional[int] = Field(None, ge=1, le=10_000_000, description="the shared FFN's width (none: "
                                         "shared_experts * the expert width)")
    shared_gate: bool = Field(False, description="shared output times sigmoid(Linear(D, 1)(x)) (Qwen3-Next)")
    router: Literal["softmax", "sigmoid"] = Field("softmax", description="router scores of the logits (fp32)")
    renorm: bool = Field(True, description="the top-k weights rescaled to sum 1 (softmax+renorm: Mixtral's top-k "
                         "then softmax)")

    @model_validator(mode="before")
    @classmethod
    def _settle(cls, data):
        return settle(data, cls) if isinstance(data, dict) else data

    @field_validator("top_k", "shared_experts")
    @classmethod
    def _moe_counts(cls, value, info):
        experts = info.data.get("experts", 0)
        if info.field_name == "top_k" and experts and value > experts:
            raise ValueError(f"top_k={value} is more than experts={experts}; valid: {MOE_FORMS}")
        if info.field_name == "shared_experts" and value and not experts:
            raise ValueError(f"shared_experts={value} needs routed experts (experts=E); valid: {MOE_FORMS}")
        return value

    @field_validator("shared_hidden", "shared_gate")
    @classmethod
    def _shared(cls, value, info):
        if value not in (None, False) and not info.data.get("shared_experts", 0):
            shown = str(value).lower() if isinstance(value, bool) else value
            raise ValueError(f"{info.field_name}={shown} needs shared experts (shared_experts=S); "
                             f"valid: {MOE_FORMS}")
        return value

    @field_validator("bias", check_fields=False)
    @classmethod
    def _expert_bias(cls, value, info):
        if value and info.data.get("experts", 0):
            raise ValueError(f"experts take no biases (bias=true with experts={info.data['experts']}); "
                             f"valid: {MOE_FORMS}")
        return value

    def params(self, dim: int) -> int:
        return ffn_params(self, dim)

    def active_params(self, dim: int) -> int:
        """Parameters a token uses: all of a dense FFN; the router, top_k experts and the shared part of an MoE."""
        return ffn_params(self, dim, active=True)

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        return ffn_flops(self, dim)


class FFNSpec(FFNOptions):
    """The FFN sub-block after a mixer: `x + ffn(norm(x))`. `token_shift` is RWKV-7's channel mixing."""

    bias: bool = Field(True, description="biases on gate/up/down (default: on for plain, off for gated and experts)")
    token_shift: bool = Field(False, description="RWKV channel mixing (token-shift lerp, relu^2)")

    def params(self, dim: int) -> int:
        if self.token_shift:
            return dim + 2 * dim * cmix_hidden(dim, self.mult)
        return ffn_params(self, dim)

    def active_params(self, dim: int) -> int:
        return self.params(dim) if self.token_shift else ffn_params(self, dim, active=True)

    def state_numel(self, dim: int) -> int:
        return dim if self.token_shift else 0  # the channel mix's previous token

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        if self.token_shift:
            return 2 * 2 * dim * cmix_hidden(dim, self.mult)
        return ffn_flops(self, dim)


def hidden(mult: float, dim: int, width: Optional[int] = None) -> int:
    """FFN hidden width F: `width` (the `hidden` option) when given, else int(mult * dim) (at least 1)."""
    return width if width is not None else max(1, int(mult * dim))


def cmix_hidden(dim: int, mult) -> int:
    """fla's RWKV7FeedForward intermediate size: int(dim * mult) rounded up to a multiple of 32."""
    return 32 * ((int(dim * mult) + 31) // 32)


def ffn_text(spec) -> str:
    """describe's short form: `x4 gelu`, `h14336 silu gated`, `x4 relu2 nobias` (bias shown where not the default)."""
    width = f"h{spec.hidden}" if spec.hidden is not None else f"x{spec.mult:g}"
    text = f"{width} {spec.act}" + (" gated" if spec.gated else "")
    if spec.bias != default_bias(spec.act, spec.gated, spec.experts):
        text += " bias" if spec.bias else " nobias"
    for name in ("gate_scale", "down_scale"):
        if getattr(spec, name, 1.0) != 1.0:
            text += f" {name}={getattr(spec, name):g}"
    return text + (moe_text(spec) if spec.experts else "")


def moe_text(spec) -> str:
    """describe's short form of the routing: ` experts 16 top 2`, ` ... shared 1 h512 gate sigmoid norenorm`."""
    text = f" experts {spec.experts} top {spec.top_k}"
    if spec.shared_experts:
        text += f" shared {spec.shared_experts}" + (f" h{spec.shared_hidden}" if spec.shared_hidden is not None else "")
        text += " gate" if spec.shared_gate else ""
    return text + (" sigmoid" if spec.router == "sigmoid" else "") + ("" if spec.renorm else " norenorm")


def router_params(spec, dim: int) -> int:
    """The router's parameters (E*D; 0 for a dense FFN)."""
    return spec.experts * dim if getattr(spec, "experts", 0) else 0


def moe_widths(spec, dim: int) -> tuple[int, int]:
    """(F, Fs): the width of each routed expert and of the shared FFN (0 without shared experts)."""
    f = hidden(spec.mult, dim, spec.hidden)
    shared = spec.shared_hidden if spec.shared_hidden is not None else spec.shared_experts * f
    return f, (shared if spec.shared_experts else 0)


def ffn_params(spec, dim: int, active: bool = False) -> int:
    """Parameters of the plain/gated FFN (spec: mult, act, gated, bias, hidden) or its mixture of experts: router
    E*D, E experts (top_k of them when `active`), the shared FFN and its gate."""
    f, gated = hidden(spec.mult, dim, spec.hidden), is_gated(spec.act, spec.gated)
    per = (3 if gated else 2) * dim  # weights per hidden unit of one FFN
    if spec.experts:
        _, fs = moe_widths(spec, dim)
        routed = spec.top_k if active else spec.experts
        return spec.experts * dim + routed * per * f + per * fs + (dim if spec.shared_gate else 0)
    return per * f + ((2 if gated else 1) * f + dim if spec.bias else 0)


def ffn_flops(spec, dim: int) -> int:
    """2 per multiply-add of the projections (biases and activations are not counted); an MoE: the router, top_k
    experts, the shared FFN and its gate (the routing's sort and weighting are not counted)."""
    if spec.experts:
        return 2 * ffn_params(spec, dim, active=True)
    return 2 * (3 if is_gated(spec.act, spec.gated) else 2) * dim * hidden(spec.mult, dim, spec.hidden)


def ffn_on_by_rule(specs, after: str) -> bool:
    """Whether a layer of these mixer specs (classes or instances) gets an FFN sub-block by the model's rule
    `ffn after=attn|all|none` (before any `ffn=true|false` on the layer)."""
    if len(specs) == 1 and not specs[0].TAKES_FFN:
        return False
    if len(specs) == 1 and specs[0].OWN_FFN is not None:
        return True
    return after == "all" or (after == "attn" and any(s.ROLE == "attention" for s in specs))


def default_ffn(specs, model_ffn: "FFNSpec") -> "FFNSpec":
    """The FFN a layer gets when it has one: the kind's own (RWKV-7's channel mix) or the model's."""
    own = specs[0].OWN_FFN if len(specs) == 1 else None
    return FFNSpec(**own) if own is not None else model_ffn


PLACE_KEYS = ("every", "offset")  # `moe every=K offset=O ...`: the placement shortcut's own keys


def placed(index: int, every: int, offset: int) -> bool:
    """Whether layer `index` (0-based) gets the `moe every=K offset=O` options (Jamba's expert_layer_period/offset)."""
    return index % every == offset


def placed_options(ffn_opts: dict, moe_opts: dict) -> dict:
    """The FFN options of a layer the placement shortcut turns into an MoE: the model's `ffn` options, then the
    `moe` statement's (experts: written on `moe`, else on `ffn`, else 8, the `moe` kind's default); a width written on
    `moe` (mult or hidden) replaces the `ffn` statement's."""
    from . import spec_class  # the registry imports the `moe` kind (its default experts) without an import cycle

    base = dict(ffn_opts)
    if "mult" in moe_opts or "hidden" in moe_opts:
        base.pop("hidden", None), base.pop("mult", None)
    return base | {"experts": base.get("experts") or spec_class("moe").default("experts")} | moe_opts


def ffn_options(specs, model_opts: dict) -> dict:
    """The options written for a layer's default FFN (the kind's own, or the model's `ffn` statement), to which an
    `at N ffn ...` override adds its own before the spec settles its defaults (bias follows the final form)."""
    own = specs[0].OWN_FFN if len(specs) == 1 else None
    return dict(own) if own is not None else dict(model_opts)
