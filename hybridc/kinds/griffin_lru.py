"""`griffin_lru`: Griffin's recurrent block with the RG-LRU (De et al. 2024, arXiv:2402.19427), as recurrentgemma.

Parameters: linear_y, linear_x (W, D) + bias, linear_out (D, W) + bias, conv_1d (K, W) + bias, a_param (W,), and
the input and recurrence gates, block-diagonal over M heads ((M, W/M, W/M) + bias each). Decode state: the conv
window (W, K-1) and the RG-LRU state (W,). Symbols: D model dim, W recurrence width, M heads, K conv width.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import KindSpec, auto_field, positive_int


class GriffinLRUSpec(KindSpec):
    """Griffin's recurrent block with the RG-LRU (De et al. 2024), as recurrentgemma."""

    kind: Literal["griffin_lru"] = "griffin_lru"
    width: int = auto_field("RG-LRU width (auto: dim)", ge=1, le=65536)
    heads: int = Field(4, ge=1, le=1024, description="blocks of the block-diagonal gates")
    conv: int = Field(4, ge=1, le=64, description="temporal conv width")

    SHOWN = ("width",)

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        out = dict(options)
        if out.get("width") == "auto":
            out["width"] = dim
        for name in ("width", "heads", "conv"):
            if name in out:
                positive_int(out[name], name)
        width, heads = out.get("width", dim), cls.option(out, "heads")
        if width % heads:
            raise ValueError(f"width={width} is not divisible by heads={heads}")
        return out

    def params(self, dim: int) -> int:
        W, M, K = self.width, self.heads, self.conv
        # linear_y, linear_x (w, b) + linear_out (w, b) + conv_1d (w, b) + a_param + 2 block-diagonal gates (w, b)
        return 2 * (dim * W + W) + (W * dim + dim) + (K * W + W) + W + 2 * (W * (W // M) + W)

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        W, K = self.width, self.conv
        return W * (K - 1) + W  # conv window + RG-LRU state (the int64 position counter is bookkeeping)

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        W, M, K = self.width, self.heads, self.conv
        matmuls = 2 * 2 * dim * W + 2 * W * dim + 2 * 2 * W * (W // M)
        biases = 2 * W + dim + 2 * W      # linear_y/x, linear_out, gate biases
        conv = 2 * K * W + W
        # gelu, 2 sigmoids, softplus*r*c (3), exp(log a), exp(2 log a), 1-., sqrt, x*i*mult (2), h update (2), h*y
        rglru = 15 * W
        return matmuls + biases + conv + rglru
