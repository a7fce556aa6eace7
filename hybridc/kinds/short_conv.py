"""`short_conv`: LFM2's gated short convolution (Liquid AI's LFM2), as transformers' `Lfm2ShortConv`.

Parameters (docs/layers.md): in_proj (3D, D), conv (D, 1, K), out_proj (D, D), each with a bias (D-sized: 3D, D, D)
when `bias` (transformers' conv_bias: LFM2 puts it on all three). Math: [B, C, x] = in_proj(u);
out = out_proj(C * conv(B * x)), conv a depthwise causal convolution of width K (no activation).
Decode state: the last K-1 inputs of the conv, B * x (D, K-1). Symbols: D model dim, K conv width.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import KindSpec, positive_int


class ShortConvSpec(KindSpec):
    """LFM2's gated short convolution: out_proj(C * conv(B * x)) with [B, C, x] = in_proj(u)."""

    kind: Literal["short_conv"] = "short_conv"
    conv: int = Field(3, ge=1, le=64, description="width of the depthwise causal conv (LFM2's conv_L_cache)")
    bias: bool = Field(False, description="biases on in_proj, conv and out_proj (LFM2's conv_bias)")

    SHOWN = ("conv",)

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        out = dict(options)
        if "conv" in out:
            positive_int(out["conv"], "conv")
        return out

    def params(self, dim: int) -> int:
        D, K = dim, self.conv
        # in_proj + conv + out_proj (+ their biases)
        return 3 * D * D + D * K + D * D + (3 * D + D + D if self.bias else 0)

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        return dim * (self.conv - 1)  # the conv window of B * x

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        D, K = dim, self.conv
        matmuls = 2 * D * 3 * D + 2 * D * D
        biases = 3 * D + D + D if self.bias else 0   # in_proj, conv and out_proj bias adds
        # B * x (1), conv taps (madd = 2 per tap), C * y (1)
        return matmuls + biases + D + 2 * D * K + D
