"""`mlp`: a standalone pre-norm feed-forward layer (Megatron-LM's pattern symbol `-`); the FFN sub-block's math
(`hybridc.kinds._ffn`: plain or gated, biases or none, `hidden` or `mult`) with no sequence mixing and no FFN of its
own."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from ._base import KindSpec, auto_field
from ._ffn import MULT, Act, ffn_flops, ffn_params, settle


class MLPSpec(KindSpec):
    """A standalone pre-norm feed-forward layer (Megatron's `-`)."""

    kind: Literal["mlp"] = "mlp"
    mult: float = Field(MULT, gt=0, le=64, description="hidden = int(mult * dim) (unless hidden is given)")
    act: Act = Field("gelu", description="activation (swiglu: silu, gated)")
    gated: bool = Field(False, description="act(gate(x)) * up(x)")
    bias: bool = auto_field("biases on gate/up/down (auto: on for plain, off for gated)")
    hidden: Optional[int] = Field(None, ge=1, le=10_000_000, description="explicit hidden width (wins over mult)")
    gate_scale: float = Field(1.0, gt=0, description="gated form: act(gate(x) * gate_scale) * up(x) (muP)")
    down_scale: float = Field(1.0, gt=0, description="the output down(h) is multiplied by this (muP)")

    ROLE = "mlp"
    SHOWN = ("mult", "act")
    TAKES_FFN = False

    @model_validator(mode="before")
    @classmethod
    def _settle(cls, data):
        return settle(data) if isinstance(data, dict) else data

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        return settle(options)

    def params(self, dim: int) -> int:
        return ffn_params(self, dim)

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        return ffn_flops(self, dim)
