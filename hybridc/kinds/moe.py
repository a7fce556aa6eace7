"""`moe`: a standalone pre-norm mixture-of-experts layer (Megatron-LM's pattern symbol `E`): the `mlp` kind with
routed experts on by default (`experts=8`, `top_k=2`). The options, weights and costs are the FFN's
(`hybridc.kinds._ffn`; docs/layers.md, "Mixture of experts")."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .mlp import MLPSpec


class MoESpec(MLPSpec):
    """A standalone pre-norm MoE layer (Megatron's `E`)."""

    kind: Literal["moe"] = "moe"  # type: ignore[assignment]
    experts: int = Field(8, ge=1, le=1_000_000, description="routed experts of width hidden/mult (at least 1)")

    SHOWN = ("experts", "top_k")
