"""The FFN sub-block after a mixer, `x + ffn(norm(x))`, and the standalone MLP's feed-forward (docs/layers.md).

Plain form: `up` (F, D), activation, `down` (D, F); gated form (`gated=true`, or `act=swiglu`, which is silu gated):
`down(act(gate(x)) * up(x))` with `gate` (F, D) too. Falcon-H1's muP multipliers, no parameters: `gate_scale` (gated
form: act(gate(x) * gate_scale)) and `down_scale` (the output times down_scale). Biases on every projection or none (`bias`: default on for the
plain form, off for the gated one). F = `hidden` when given (it wins over `mult` wherever both are given), else
int(mult * D). `token_shift` is RWKV-7's channel mixing (fla's RWKV7FeedForward): a token-shift lerp `x_k` (D,),
`key` (F', D), relu^2, `value` (D, F'), no biases, F' = int(mult * D) rounded up to 32.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from ._base import Frozen

Act = Literal["gelu", "gelu_tanh", "silu", "relu", "relu2", "swiglu"]
AFTER = ("attn", "all", "none")  # `ffn after=...`: which layers get the FFN sub-block
MULT = 4.0  # the default width factor (the one place it is written)
FORMS = ("plain: act=gelu|gelu_tanh|silu|relu|relu2 (up, down); gated: act=gelu|gelu_tanh|silu|relu|relu2 gated=true "
         "(gate, up, down: act(gate(x)) * up(x)); act=swiglu (= act=silu gated=true)")


def is_gated(act: str, gated: bool) -> bool:
    return gated or act == "swiglu"


def default_bias(act: str, gated: bool) -> bool:
    """Biases by default: on for the plain form, off for the gated one (today's gelu/... and swiglu)."""
    return not is_gated(act, gated)


def settle(options: dict) -> dict:
    """The FFN options with `bias` filled (auto/None -> the form's default), `mult` reset when `hidden` is given
    (hidden wins), and bad combinations rejected (ValueError listing the valid forms)."""
    out = dict(options)
    fields = FFNSpec.model_fields  # the defaults are the fields'
    act, gated = out.get("act", fields["act"].default), out.get("gated", fields["gated"].default)
    if act == "swiglu" and gated is True:
        raise ValueError("act=swiglu is already gated (write act=silu gated=true, or act=swiglu); "
                         f"valid forms: {FORMS}")
    if out.get("bias", "auto") == "auto":
        out["bias"] = default_bias(act, gated if isinstance(gated, bool) else False)
    if out.get("hidden") not in (None, "auto"):
        out["mult"] = MULT
    if out.get("gate_scale", 1.0) != 1.0 and not is_gated(act, gated is True):
        raise ValueError(f"gate_scale={out['gate_scale']} needs a gated FFN (valid: gated=true or act=swiglu with "
                         f"gate_scale=X; forms: {FORMS})")
    return out


class FFNSpec(Frozen):
    """The FFN sub-block after a mixer: `x + ffn(norm(x))`. `token_shift` is RWKV-7's channel mixing."""

    mult: float = Field(MULT, gt=0, le=64, description="hidden = int(mult * dim) (unless hidden is given)")
    act: Act = Field("gelu", description="activation (swiglu: silu, gated)")
    gated: bool = Field(False, description="act(gate(x)) * up(x)")
    bias: bool = Field(True, description="biases on gate/up/down (default: on for plain, off for gated)")
    hidden: Optional[int] = Field(None, ge=1, le=10_000_000, description="explicit hidden width (wins over mult)")
    token_shift: bool = Field(False, description="RWKV channel mixing (token-shift lerp, relu^2)")
    gate_scale: float = Field(1.0, gt=0, description="gated form: act(gate(x) * gate_scale) * up(x) (Falcon-H1's "
                              "mlp_multipliers[0])")
    down_scale: float = Field(1.0, gt=0, description="the output down(h) is multiplied by this (Falcon-H1's "
                              "mlp_multipliers[1])")

    @model_validator(mode="before")
    @classmethod
    def _settle(cls, data):
        return settle(data) if isinstance(data, dict) else data

    def params(self, dim: int) -> int:
        if self.token_shift:
            return dim + 2 * dim * cmix_hidden(dim, self.mult)
        return ffn_params(self, dim)

    def state_numel(self, dim: int) -> int:
        return dim if self.token_shift else 0  # the channel mix's previous token

    def flops(self, dim: int) -> int:
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
    if spec.bias != default_bias(spec.act, spec.gated):
        text += " bias" if spec.bias else " nobias"
    for name in ("gate_scale", "down_scale"):
        if getattr(spec, name, 1.0) != 1.0:
            text += f" {name}={getattr(spec, name):g}"
    return text


def ffn_params(spec, dim: int) -> int:
    """Parameters of the plain/gated FFN (spec: mult, act, gated, bias, hidden)."""
    f, gated = hidden(spec.mult, dim, spec.hidden), is_gated(spec.act, spec.gated)
    n = (3 if gated else 2) * dim * f
    return n + ((2 if gated else 1) * f + dim if spec.bias else 0)


def ffn_flops(spec, dim: int) -> int:
    """2 per multiply-add of the projections (biases and activations are not counted)."""
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


def ffn_options(specs, model_opts: dict) -> dict:
    """The options written for a layer's default FFN (the kind's own, or the model's `ffn` statement), to which an
    `at N ffn ...` override adds its own before the spec settles its defaults (bias follows the final form)."""
    own = specs[0].OWN_FFN if len(specs) == 1 else None
    return dict(own) if own is not None else dict(model_opts)
