"""The FFN sub-block after a mixer, `x + ffn(norm(x))`, and the standalone MLP's feed-forward (docs/layers.md).

Plain FFN: `up` (F, D) + bias, activation, `down` (D, F) + bias with F = int(mult * D); `swiglu`: `gate`, `up`
(F, D), `down` (D, F), no biases. `token_shift` is RWKV-7's channel mixing (fla's RWKV7FeedForward): a token-shift
lerp `x_k` (D,), `key` (F', D), relu^2, `value` (D, F'), no biases, F' = int(mult * D) rounded up to 32.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Frozen

Act = Literal["gelu", "silu", "relu", "relu2", "swiglu"]
AFTER = ("attn", "all", "none")  # `ffn after=...`: which layers get the FFN sub-block


class FFNSpec(Frozen):
    """The FFN sub-block after a mixer: `x + ffn(norm(x))`. `token_shift` is RWKV-7's channel mixing."""

    mult: float = Field(4.0, gt=0, le=64, description="hidden = int(mult * dim)")
    act: Act = Field("gelu", description="activation")
    token_shift: bool = Field(False, description="RWKV channel mixing (token-shift lerp, relu^2)")

    def params(self, dim: int) -> int:
        if self.token_shift:
            return dim + 2 * dim * cmix_hidden(dim, self.mult)
        return ffn_params(self.mult, self.act, dim)

    def state_numel(self, dim: int) -> int:
        return dim if self.token_shift else 0  # the channel mix's previous token

    def flops(self, dim: int) -> int:
        if self.token_shift:
            return 2 * 2 * dim * cmix_hidden(dim, self.mult)
        return ffn_flops(self.mult, self.act, dim)


def hidden(mult: float, dim: int) -> int:
    """FFN hidden width F = int(mult * dim) (at least 1)."""
    return max(1, int(mult * dim))


def cmix_hidden(dim: int, mult) -> int:
    """fla's RWKV7FeedForward intermediate size: int(dim * mult) rounded up to a multiple of 32."""
    return 32 * ((int(dim * mult) + 31) // 32)


def ffn_params(mult: float, act: str, dim: int) -> int:
    f = hidden(mult, dim)
    if act == "swiglu":
        return 3 * dim * f
    return dim * f + f + f * dim + dim


def ffn_flops(mult: float, act: str, dim: int) -> int:
    return 2 * (3 if act == "swiglu" else 2) * dim * hidden(mult, dim)


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
